"""The published contract: schemathesis, driven by ``/openapi.json`` alone,
against a live Waitress server with a user key and with an admin key. Every
check it has (conformance of statuses, content types, headers and bodies;
schema-valid requests accepted, schema-violating ones refused; 405 with
Allow for undeclared methods; keys enforced) must pass, and no answer may be
a 5xx. The server's limits are set small so that generated requests stay
cheap: the document states them (``max_tokens`` at most 4, ``n`` at most 2)
and the generator keeps to what the document says."""
from __future__ import annotations

from collections import Counter
from typing import Any, Dict

import pytest
import schemathesis
from schemathesis.engine import from_schema
from schemathesis.engine.events import FatalError, NonFatalError, ScenarioFinished

from procs import free_port

from . import contract_hooks  # noqa: F401  (the generator's hints: GBNF grammars, references between fields)
from .conftest import server_config, start_server

KEYS = {"user": "contract-user-key", "admin": "contract-admin-key"}
EXAMPLES = 4  # per operation, phase and key


@pytest.fixture(scope="module")
def contract_server(model_path, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("contract")
    (tmp / "models").mkdir()
    cfg = server_config(model_path, port=free_port(), max_tokens_limit=4, max_generations_per_request=2,
                        max_prompts=2, max_embedding_inputs=4, max_request_body_mb=1)
    # one slot of 4096 tokens: generated messages of a few thousand tokens still fit
    cfg["models"][0]["load_params"].update(n_ctx=4096, n_parallel=1)
    cfg["security"] = {"api_keys": [KEYS["user"]], "admin_api_keys": [KEYS["admin"]],
                       "model_directories": [str(tmp / "models")]}  # empty: POST /engines loads nothing
    server = start_server(cfg, tmp)
    yield server
    assert server.stop() == 0, server.log()
    assert "Traceback" not in server.log()


def run_schemathesis(base_url: str, key: str) -> Dict[str, Any]:
    """What ``schemathesis run URL/openapi.json --checks all`` does (every phase, every check; no response time
    limit: speed is not the contract), through its Python engine; returns the failures, errors and statuses."""
    config = schemathesis.Config.from_dict({
        "headers": {"Authorization": f"Bearer {key}"},
        "request-timeout": 120,
        # One worker: CPython 3.11 before 3.11.8 can fail compiling code in two threads at once
        # ("AST constructor recursion depth mismatch"), which schemathesis does lazily.
        "workers": 1,
        "generation": {"max-examples": EXAMPLES, "deterministic": True},
    })
    # every route is served with and without /v1: one prefix covers the code
    schema = schemathesis.openapi.from_url(base_url + "/openapi.json", config=config).include(path_regex="^/v1/")
    failures, errors, statuses, cases = [], [], Counter(), 0
    for event in from_schema(schema).execute():
        if isinstance(event, NonFatalError):
            errors.append(f"{event.label}: {event.info.format() if hasattr(event.info, 'format') else event.value}")
        elif isinstance(event, FatalError):
            errors.append(f"fatal: {event.exception!r}")
        elif isinstance(event, ScenarioFinished):
            for case_id, nodes in event.recorder.checks.items():
                for node in nodes:
                    if node.failure_info is not None:
                        f = node.failure_info.failure
                        answer = getattr(event.recorder.interactions.get(case_id), "response", None)
                        seen = f"{answer.status_code} {answer.content[:300]!r}" if answer is not None else ""
                        failures.append(f"{event.label} [{node.name}] {f.title}: {f.message[:600]}\n  -> {seen}\n"
                                        f"  {node.failure_info.code_sample[:800]}")
            for interaction in event.recorder.interactions.values():
                cases += 1
                if interaction.response is not None:
                    statuses[interaction.response.status_code // 100 * 100] += 1
    return {"failures": sorted(set(failures)), "errors": errors, "statuses": statuses, "cases": cases}


@pytest.mark.parametrize("role", ["user", "admin"])
def test_openapi_contract(contract_server, role: str) -> None:
    result = run_schemathesis(contract_server.base_url, KEYS[role])
    print(f"{role}: {result['cases']} cases, statuses {dict(result['statuses'])}")
    assert result["cases"] > 500, result  # it ran: every operation, phase and check
    assert not result["failures"], "\n\n".join(result["failures"])
    assert not result["errors"], "\n".join(result["errors"])
    assert result["statuses"][500] == 0 and result["statuses"][200] > 0, result["statuses"]
