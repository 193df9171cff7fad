"""Wire format: pydantic models of request bodies and helpers for response objects. No logic, no HTTP."""
