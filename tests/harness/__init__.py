"""Test infrastructure shared by tests/ and e2e/: the local control plane, helm and the operator process."""
