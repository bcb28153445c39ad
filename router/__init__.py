"""The router: an OpenAI-compatible proxy in front of an LLMDeployment's engine replicas."""
