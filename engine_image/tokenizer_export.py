"""`GET /v1/tokenizer` (a FleetServe extension): the engine's tokenizer, chat template and KV block size, so a
router in front of it turns prompts into the same token blocks the engine's prefix cache names, without a copy
of the model."""

from aiohttp import web


def tokenizer_description(tokenizer, block_size: int) -> dict:
    special = {name: str(value) for name, value in tokenizer.special_tokens_map.items() if isinstance(value, str)
               or hasattr(value, "content")}
    return {
        "tokenizer": tokenizer.backend_tokenizer.to_str(),
        "chat_template": tokenizer.chat_template,
        "special_tokens": special,
        "block_size": block_size,
    }


def tokenizer_handler(engine):
    description = tokenizer_description(engine.tokenizer, engine.block_size)

    async def handle(_: web.Request) -> web.Response:
        return web.json_response(description)
    return handle
