"""The set of services the HTTP edge calls; built once by ``app.create_app``."""

from __future__ import annotations

from dataclasses import dataclass

from assistantd.llm.router import ModelRouter
from assistantd.service.assistants import AssistantService
from assistantd.service.files import FileService
from assistantd.service.keys import KeyService
from assistantd.service.messages import MessageService
from assistantd.service.passthrough import PassthroughService
from assistantd.service.runs import RunService
from assistantd.service.threads import ThreadService
from assistantd.service.vector_stores import VectorStoreService
from assistantd.store import Database
from assistantd.tools.code_interpreter import CodeInterpreter


@dataclass(frozen=True)
class Services:
    db: Database
    assistants: AssistantService
    threads: ThreadService
    messages: MessageService
    files: FileService
    keys: KeyService
    runs: RunService
    router: ModelRouter
    vector_stores: VectorStoreService
    code_interpreter: CodeInterpreter
    passthrough: PassthroughService
