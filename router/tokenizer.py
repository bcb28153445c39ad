"""The engine's own tokenizer, learned from a replica's `GET /v1/tokenizer`, so the router turns prompts into the
token blocks the engines' prefix caches name (same tokenizer, same chat template, same block size)."""

from dataclasses import dataclass

from fleetserve.api.prefix_blocks import prefix_block_hashes


@dataclass
class PromptTokenizer:
    tokenizer: object  # transformers.PreTrainedTokenizerFast
    block_size: int

    @classmethod
    def from_description(cls, description: dict) -> "PromptTokenizer":
        from tokenizers import Tokenizer
        from transformers import PreTrainedTokenizerFast
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(description["tokenizer"]),
                                            chat_template=description.get("chat_template"),
                                            **description.get("special_tokens", {}))
        return cls(tokenizer, int(description["block_size"]))

    def prompt_ids(self, kind: str, body: dict) -> list[int] | None:
        """The token ids the engine will see, as its server builds them; None for anything it would reject."""
        try:
            if kind == "chat":
                text = self.tokenizer.apply_chat_template(body["messages"], tokenize=False, add_generation_prompt=True)
                return self.tokenizer.encode(text, add_special_tokens=False)
            prompt = body["prompt"]
            if isinstance(prompt, str):
                return self.tokenizer.encode(prompt)
            if isinstance(prompt, list) and all(isinstance(t, int) for t in prompt):
                return prompt
        except Exception:  # a prompt the template rejects: the replica answers the 400, routing needs no ids
            return None
        return None

    def text_ids(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def block_hashes(self, token_ids: list[int] | None) -> list[int]:
        return prefix_block_hashes(token_ids, self.block_size) if token_ids else []
