"""python-http: a WASI preview 2 `wasi:http/proxy` component, built by test-images with
componentize-py, which exports `wasi:http/incoming-handler`.

For each request it prints one line on stdout, `request <METHOD> <path>`, and answers 200
with the body `hello from python http <path>\n`; a path `/status/<n>` answers status n
(with the same body); a path `/sleep/<s>` sleeps s seconds before answering, so tests can
keep a request in flight; `/spin` loops forever (a request's deadline must end it);
`/alloc/<mb>` holds mb MiB while it answers (a request's memory bound may refuse it). The
path is the request's path and query as received.
"""

import sys
import time

from componentize_py_types import Ok
from wit_world import exports
from wit_world.imports.types import (
    Fields,
    Method_Other,
    OutgoingBody,
    OutgoingResponse,
    ResponseOutparam,
)

# The method's name for each variant of `wasi:http/types.method` but `other`.
METHODS = {
    "Method_Get": "GET",
    "Method_Head": "HEAD",
    "Method_Post": "POST",
    "Method_Put": "PUT",
    "Method_Delete": "DELETE",
    "Method_Connect": "CONNECT",
    "Method_Options": "OPTIONS",
    "Method_Trace": "TRACE",
    "Method_Patch": "PATCH",
}


def status_of(path: str) -> int:
    """Returns n for `/status/<n>` with n a valid status code, else 200."""
    prefix = "/status/"
    if path.startswith(prefix):
        code = path[len(prefix) :]
        if code.isdigit() and 100 <= int(code) <= 999:
            return int(code)
    return 200


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request, response_out: ResponseOutparam) -> None:
        method = request.method()
        name = method.value if isinstance(method, Method_Other) else METHODS[type(method).__name__]
        path = request.path_with_query() or "/"
        print(f"request {name} {path}", flush=True)
        if path.startswith("/sleep/"):
            time.sleep(float(path[len("/sleep/") :] or 0))
        if path == "/spin":
            while True:
                pass
        # A local: it is held until the handler returns.
        held = bytearray(int(path[len("/alloc/") :] or 0) << 20) if path.startswith("/alloc/") else b""

        body = f"hello from python http {path}\n".encode()
        response = OutgoingResponse(Fields.from_list([("content-type", b"text/plain")]))
        response.set_status_code(status_of(path))
        outgoing = response.body()
        ResponseOutparam.set(response_out, Ok(response))
        with outgoing.write() as stream:
            # blocking-write-and-flush takes at most 4096 bytes at a time.
            for start in range(0, len(body), 4096):
                stream.blocking_write_and_flush(body[start : start + 4096])
        OutgoingBody.finish(outgoing, None)
