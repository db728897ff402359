"""The steps of a client operation, taken by the blocking and the asyncio client alike.

Every operation of the clients (a call retried over the endpoints, a shared-memory send, a readiness
wait, unregistering regions) is written once, in `core.py`, as a flow: a generator
that makes every decision and does no I/O itself. It yields the steps the client must take, `Call`
(a method of an endpoint's tritonclient client) and `Sleep`, and gets back each step's outcome: the
call's result, or its error raised into the flow at the `yield`, so that the flow handles a failed
call with a plain try/except. What the flow returns is the operation's result; what it raises, the
caller's error. A flow can run another with `yield from`. (httpx's `Auth.auth_flow` works alike.)

The clients only take the steps, with `FlowRun`: the blocking client calls and sleeps, the asyncio
client awaits.

    run = FlowRun(flow)
    while not run.finished:
        with run:  # hands the step's outcome, or the error it raised, to the flow
            run.outcome = run.step.start(time.sleep)      # asyncio: await run.step.start(asyncio.sleep)
    return run.result
"""
from __future__ import annotations

from typing import Any, Callable, Generator, Generic, TypeVar, Union

T = TypeVar("T")


class Call:
    """Call `method` of the endpoint's tritonclient client (tritonclient.grpc and tritonclient.grpc.aio
    have the same methods) with these arguments."""

    __slots__ = ("endpoint", "method", "args", "kwargs")

    def __init__(self, endpoint, method: str, *args, **kwargs):
        self.endpoint = endpoint  # an endpoints.Endpoint
        self.method = method
        self.args = args
        self.kwargs = kwargs

    def start(self, sleep: Callable[[float], Any]) -> Any:
        """The call's result; from the asyncio client's channel, an awaitable of it."""
        return getattr(self.endpoint.client, self.method)(*self.args, **self.kwargs)

    def __repr__(self) -> str:
        return f"Call({self.endpoint.url}, {self.method})"


class Sleep:
    """Wait `seconds` (> 0) before the next step."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float):
        self.seconds = seconds

    def start(self, sleep: Callable[[float], Any]) -> Any:
        return sleep(self.seconds)

    def __repr__(self) -> str:
        return f"Sleep({self.seconds:.3f})"


Step = Union[Call, Sleep]
# A flow yields steps, is sent their outcomes, and returns a T.
Flow = Generator[Step, Any, T]


class FlowRun(Generic[T]):
    """One run of a flow. `step` is the step to take now; inside `with run:`, set `outcome` to its
    result. On leaving the block the flow gets the outcome, or the error the block raised, and moves to
    its next step, or to its end: then `finished` is true and `result` holds what it returned. An
    error the flow raises (the caller's error: one it gave up on, or the step's own, raised again)
    comes out of the `with` block; an error the flow handled does not."""

    __slots__ = ("_flow", "step", "outcome", "finished", "result")

    def __init__(self, flow: Flow[T]):
        self._flow = flow
        self.outcome: Any = None
        self.finished = False
        self.result: T | None = None
        try:
            self.step: Step | None = flow.send(None)  # a flow may also end, or raise, before its first step
        except StopIteration as end:
            self.step, self.finished, self.result = None, True, end.value

    def __enter__(self) -> "FlowRun[T]":
        self.outcome = None
        return self

    def __exit__(self, kind, error, traceback) -> bool:
        # Inline rather than in helpers: this runs for every step of every call.
        try:
            self.step = self._flow.send(self.outcome) if error is None else self._flow.throw(error)
        except StopIteration as end:
            self.step, self.finished, self.result = None, True, end.value
        except BaseException as raised:
            if raised is error:
                return False  # the flow let the step's error through: the `with` statement raises it on
            raise
        return True  # the flow handled the step's error, if any
