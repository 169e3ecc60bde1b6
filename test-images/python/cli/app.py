"""python-cli: a WASI preview 2 command component, built by test-images with componentize-py
for the `wasi:cli/command` world, so that the shim runs a component from a real toolchain.

    python-cli              prints "hello from python", returns normally (exit 0)
    python-cli exit <n>     n = 0 returns normally; any other n makes run return an error,
                            which wasmtime turns into exit status 1
    python-cli sleep <s>    time.sleep(s) (s may be fractional), then returns normally
    python-cli late <s>     sleeps s seconds, then prints "hello from python" on stdout and
                            "bye from python" on stderr and returns normally
    python-cli args         prints each argument, the program's name included, one per line
    python-cli env <NAME>   prints the value of NAME, or returns an error if it is not set
    python-cli raise        raises an exception that nothing catches

A bad command prints a usage line on stderr and returns an error.

The interpreter was initialised when the component was built, so `sys.argv` and `os.environ`
would hold the build's values: both are read from `wasi:cli/environment` at each run.
"""

import os
import sys
import time

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import environment

USAGE = "usage: python-cli [exit <n> | sleep <s> | late <s> | args | env <NAME> | raise]"


def fail() -> None:
    """Makes run return `err`: the command's exit status is 1."""
    sys.stdout.flush()
    sys.stderr.flush()
    raise Err(None)


class Run(exports.Run):
    def run(self) -> None:
        sys.argv = environment.get_arguments()
        os.environ.clear()
        os.environ.update(environment.get_environment())
        args = sys.argv[1:]
        match args:
            case []:
                print("hello from python")
            case ["exit", status] if status.isdigit():
                if int(status) != 0:
                    fail()
            case ["sleep", seconds]:
                time.sleep(float(seconds))
            case ["late", seconds]:
                time.sleep(float(seconds))
                print("hello from python", flush=True)
                print("bye from python", file=sys.stderr, flush=True)
            case ["args", *_]:
                for arg in sys.argv:
                    print(arg)
            case ["env", name]:
                value = os.environ.get(name)
                if value is None:
                    fail()
                print(value)
            case ["raise"]:
                raise RuntimeError("raised on request")
            case _:
                print(USAGE, file=sys.stderr)
                fail()
        sys.stdout.flush()
