"""How a claim is measured: the backend primitives (backend), the verdict vocabulary (verdict), a claim's
status folded from its cases (status) and the pytest plugin that runs it all (plugin)."""
