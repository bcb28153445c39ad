"""What the engine, the operator and the autoscaler agree on: the LLMDeployment API (spec, status, CRD), labels,
conditions, the multi-node env contract and the replica split. Components import this, never each other."""
