"""Values accepted by /files (multipart, so validated field by field rather than as a model)."""

from __future__ import annotations

# Purposes a client may upload with; `assistants_output` and the *-results purposes are ours to set.
UPLOAD_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
ALL_PURPOSES = (*UPLOAD_PURPOSES, "assistants_output", "batch_output", "fine-tune-results")

MIN_EXPIRY_SECONDS = 3600
MAX_EXPIRY_SECONDS = 2_592_000
