"""Budgets of one execution: it is stopped when it runs too long or makes too much.

Templates are untrusted input: ``{% for %}`` loops nested past any sensible count, a string
multiplied into gigabytes, a YAML alias bomb, a list grown in a loop. An execution has two budgets,
set per template:

``execution_timeout``
    Past it, the execution is stopped. Templates execute in worker threads; a watchdog thread
    raises :class:`Interrupted` *in* the worker (``PyThreadState_SetAsyncExc``), which stops any
    pure-Python loop at its next bytecode check, wherever it is (a Jinja loop, a helper). A stop
    of the daemon (SIGTERM, ``-once-timeout``) interrupts every running execution the same way.
``execution_max_size``
    No output, and no single value made by an operator or a call, may exceed it. The checks
    happen *before* the C operation that would allocate it (``"x" * n``, ``10 ** n``,
    ``"%999999999d" % 1``, ``s.ljust(n)``, ``s.replace(a, b)``), since a C operation holds the
    interpreter lock and cannot be interrupted. What grows in many small steps (a list appended
    to in a loop) is caught by the watchdog, which stops the newest running execution when the
    process' resident memory grew by more than four times the sum of their size budgets (which
    thread allocated is not known). Nothing is evaluated at compile time (:class:`_RuntimeOnly`),
    outside any budget.

Two operations that could hold the interpreter lock for minutes are made linear elsewhere:
regular expressions use RE2 (:mod:`.helpers`), and ``parseYAML`` counts the nodes an alias
bomb would expand to before building anything.

Front ends: :func:`run` (used by the runner) arms the watchdog around any front end's
``execute``; a front end calls :func:`~ctemplate.language.execution.check_budget` per loop
iteration or output chunk where it can, and binds :class:`BudgetHooks` (the Jinja one) or the
same checks (:func:`check_binop`, :func:`check_call`) for operators and calls.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import FunctionType
from typing import Any, TypeVar

from jinja2.compiler import CodeGenerator
from jinja2.nodes import Impossible, Name, TemplateData
from jinja2.sandbox import SandboxedEnvironment

from ..errors import TemplateError
from .execution import SIZED, Execution, check_size, current, too_big

__all__ = [
    "BoundedEnvironment",
    "BudgetHooks",
    "Interrupted",
    "check_binop",
    "check_call",
    "interrupt_all",
    "run",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

POLL = 0.05  # seconds between the watchdog's looks at running executions
_REFIRE = 0.5  # seconds before an interrupt is raised again (swallowed by a bare except)
_MEMORY_FACTOR = 4  # resident memory growth allowed per byte of execution_max_size
_PAGE = os.sysconf("SC_PAGE_SIZE")


class Interrupted(BaseException):
    """Raised asynchronously in a worker thread to stop its execution.

    A ``BaseException``, so that ``except Exception`` in a helper or in Jinja does not swallow
    it; the front end (or :func:`run`) turns it into a template error."""


@dataclass(eq=False, slots=True)
class _Entry:
    """One running execution as the watchdog sees it: its thread, limits and state."""

    tid: int
    name: str
    timeout: float
    deadline: float
    max_size: int
    rss_at_start: int
    started: float
    reason: str = ""  # why it was interrupted, once it was
    fired_at: float = 0.0
    done: bool = False


_lock = threading.Lock()
_wakeup = threading.Condition(_lock)
_entries: dict[int, _Entry] = {}
_watchdog: threading.Thread | None = None
_rebase = False  # set when an execution stopped for memory has ended


def _rss() -> int:
    try:
        fd = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)
        try:
            return int(os.read(fd, 256).split()[1]) * _PAGE
        finally:
            os.close(fd)
    except (OSError, ValueError, IndexError):
        return 0


def _raise_in(tid: int, exc: type[BaseException]) -> None:
    # ctypes is imported at the first interrupt, not at start: most runs never need it (it is
    # ~2 ms of every -once and ~0.3 MiB of every daemon otherwise).
    import ctypes

    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(tid), ctypes.py_object(exc))


def _fire(entry: _Entry, reason: str, now: float) -> None:
    """Interrupt ``entry``'s thread (the lock is held)."""
    if not entry.reason:
        entry.reason = reason
    entry.fired_at = now
    _raise_in(entry.tid, Interrupted)


def _watch() -> None:
    """The watchdog: interrupts executions past their deadline or their memory budget."""
    with _lock:
        while True:
            if not _entries:
                _wakeup.wait()
                continue
            now = time.monotonic()
            running = [e for e in _entries.values() if not e.done]
            rss = _rss() if running else 0
            global _rebase
            if _rebase:  # an execution stopped for memory ended: what is left is not theirs
                _rebase = False
                for entry in running:
                    entry.rss_at_start = max(entry.rss_at_start, rss)
            grown, allowed = 0, 0
            if running:
                grown = rss - min(e.rss_at_start for e in running)
                allowed = _MEMORY_FACTOR * sum(e.max_size for e in running)
            for entry in running:
                if entry.reason and now - entry.fired_at >= _REFIRE:
                    _fire(entry, entry.reason, now)  # still running: raise it again
                elif not entry.reason and now >= entry.deadline:
                    _fire(entry, f"did not finish within {entry.timeout:g}s", now)
            if rss and grown > allowed and not any(e.reason for e in running):
                # Which thread allocated is not known: stop the newest execution, then look
                # again once it ended (its memory freed, the others may go on).
                newest = max(running, key=lambda e: e.started)
                _fire(
                    newest,
                    f"the process grew by {grown >> 20} MiB while it ran, past "
                    f"{_MEMORY_FACTOR} x execution_max_size",
                    now,
                )
            _wakeup.wait(POLL)


def wake() -> None:
    """Have the watchdog look at the running executions now (and then every :data:`POLL`
    seconds while any runs)."""
    with _lock:
        if _entries:
            _wakeup.notify()


def _start_watchdog() -> None:
    global _watchdog
    if _watchdog is None or not _watchdog.is_alive():
        _watchdog = threading.Thread(target=_watch, name="ctemplate-budget", daemon=True)
        _watchdog.start()


def run(
    execute: Callable[[Mapping[str, Any]], Execution],
    data: Mapping[str, Any],
    *,
    name: str,
    timeout: float,
    max_size: int,
    wake: bool = True,
) -> Execution:
    """``execute(data)`` in this (worker) thread under the watchdog.

    With ``wake=False`` the watchdog is not woken now: the caller promises to call
    :func:`wake` if the execution may still run after :data:`POLL` seconds (the daemon arms a
    timer on its loop), so that an execution ending sooner costs the watchdog's thread
    nothing.

    An interrupt that the front end did not turn into a template error itself becomes one
    here, naming the template."""
    tid = threading.get_ident()
    now = time.monotonic()
    entry = _Entry(tid, name, timeout, now + timeout, max_size, _rss(), now)
    with _lock:
        _start_watchdog()
        _entries[tid] = entry
        if wake:
            _wakeup.notify()
    try:
        try:
            return execute(data)
        finally:
            # Disarm: after this, the watchdog raises nothing more here (no call before
            # done is set: an interrupt can only land at a call or a loop's jump).
            with _lock:
                entry.done = True
                with contextlib.suppress(KeyError):
                    del _entries[tid]
                if entry.reason.startswith("the process grew"):
                    global _rebase
                    _rebase = True
            if entry.fired_at:
                _absorb()
    except Interrupted:
        return Execution(error=TemplateError(f"{name}: {describe(entry)}"))


def _absorb() -> None:
    """Let an interrupt still pending for this thread be raised here, and drop it.

    Not ``PyThreadState_SetAsyncExc(tid, NULL)``: on CPython 3.11 clearing leaves the
    interpreter's "eval breaker" set, which sends every thread through the slow path of each
    bytecode check from then on (and loops forever under a profiler)."""
    try:
        for _ in range(4):  # a pending exception is raised at the loop's first jump back
            pass
    except Interrupted:
        pass


def describe(entry: _Entry | None = None) -> str:
    """Why the current execution was interrupted: "execution stopped: ..." with what to do."""
    if entry is None:
        with _lock:
            entry = _entries.get(threading.get_ident())
    reason = entry.reason if entry is not None and entry.reason else "ctemplate is stopping"
    if reason.startswith("did not finish"):
        hint = "; raise execution_timeout if it needs longer"
    elif reason.startswith("the process grew"):
        hint = "; raise execution_max_size if it needs more"
    else:
        hint = ""
    return f"execution stopped: {reason}{hint}"


def interrupt_all(reason: str = "ctemplate is stopping") -> int:
    """Stop every running execution (the daemon is stopping); how many there were."""
    now = time.monotonic()
    with _lock:
        running = [e for e in _entries.values() if not e.done]
        for entry in running:
            entry.reason = ""
            _fire(entry, reason, now)
        _wakeup.notify()
    return len(running)


# --- size checks before the C operation -------------------------------------------------------

_SIZED = (str, bytes, bytearray, list, tuple)
_SIZED_EXACT = frozenset(SIZED)  # a result's type checked by exact type first: a set lookup
_DIGITS = re.compile(r"\d{7,}")  # a width or precision of a million or more


def _limit() -> int | None:
    p = current.get(None)
    return p.options.max_size if p is not None else None


def _check_widths(what: str, fmt: Any, args: Any, limit: int) -> None:
    """A format string's widths, and numbers passed to it (``*``), stay below ``limit``."""
    if isinstance(fmt, str):
        for digits in _DIGITS.findall(fmt):
            if int(digits) > limit:
                raise too_big(what, int(digits), limit)
    values = args if isinstance(args, tuple | list) else (args,)
    for value in values:
        if isinstance(value, int) and not isinstance(value, bool) and value > limit:
            raise too_big(what, value, limit)


def check_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse ``left <operator> right`` if its result would be past ``execution_max_size``."""
    limit = _limit()
    if limit is None:
        return
    if operator == "*":
        seq, n = (left, right) if isinstance(left, _SIZED) else (right, left)
        if isinstance(seq, _SIZED) and isinstance(n, int) and len(seq) * n > limit:
            raise too_big(f"the operator {operator!r}", len(seq) * n, limit)
    elif operator == "+":
        if isinstance(left, _SIZED) and isinstance(right, _SIZED):
            size = len(left) + len(right)
            if size > limit:
                raise too_big("the operator '+'", size, limit)
    elif operator == "**":
        if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
            digits = right * abs(left).bit_length() // 3  # about the decimal digits
            if digits > limit:
                raise too_big("the operator '**'", digits, limit)
    elif operator == "%" and isinstance(left, str):
        _check_widths("the operator '%'", left, right, limit)


def check_call(func: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    """Refuse a call to a method of a string or list whose result would be past the budget:
    a width (``ljust``, ``center``, ``zfill``, a ``format`` spec) or a ``replace`` that grows
    it."""
    limit = _limit()
    if limit is None:
        return
    target = getattr(func, "__wrapped__", func)  # the sandbox wraps str.format
    receiver = getattr(target, "__self__", None)
    if not isinstance(receiver, _SIZED):
        return
    name = getattr(target, "__name__", "")
    what = f"{type(receiver).__name__}.{name}()"
    if name in ("format", "format_map"):
        _check_widths(what, receiver, (*args, *kwargs.values()), limit)
    elif name == "replace" and len(args) >= 2 and isinstance(receiver, str):
        _check_replace(what, receiver, args[0], args[1], limit)
    else:
        _check_widths(what, None, (*args, *kwargs.values()), limit)


def _check_replace(what: str, s: Any, old: Any, new: Any, limit: int) -> None:
    if isinstance(s, str) and isinstance(old, str) and isinstance(new, str):
        if len(s) + (len(s) + 1) * len(new) <= limit:  # cannot be past it: skip counting
            return
        count = s.count(old)
        size = len(s) + count * (len(new) - len(old))
        if size > limit:
            raise too_big(what, size, limit)


class _NotInExecution(Exception):
    """A filter called outside an execution: Jinja folding a constant at compile time."""


def _bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` run only inside an execution (Jinja folds filters of constants at compile time,
    in the loading thread and without budgets: ``{{ 10**9 | loop | list }}`` would be built
    there; refusing makes Jinja leave it to the execution). Filters with a width, a format or
    a replacement are checked before they run."""
    skip = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0  # the context
    checked = name in _WIDTH_FILTERS

    @functools.wraps(func)  # with Jinja's jinja_pass_arg mark
    def bounded(*all_args: Any, **kwargs: Any) -> Any:
        limit = _limit()
        if limit is None:
            raise _NotInExecution(name)
        if not checked:
            return func(*all_args, **kwargs)
        args = all_args[skip:]
        subject = args[0] if args else ""
        if name in ("replace", "replaceAll") and len(args) >= 3:
            _check_replace(f"{name}()", str(subject), args[1], args[2], limit)
        elif name == "format":
            _check_widths("format()", subject, (*args[1:], *kwargs.values()), limit)
        else:
            _check_widths(f"{name}()", None, (*args[1:], *kwargs.values()), limit)
            if name == "indent" and len(args) >= 2 and isinstance(args[1], str):
                lines = str(subject).count("\n") + 1
                if lines * len(args[1]) > limit:
                    raise too_big("indent()", lines * len(args[1]), limit)
        result = func(*all_args, **kwargs)
        check_size(f"{name}()", result, limit)
        return result

    return bounded


# Filters that take a width, a format or a replacement (Jinja's and the registry's).
_WIDTH_FILTERS = frozenset(
    {"center", "indent", "format", "replace", "replaceAll", "batch", "slice"}
)


class _RuntimeOnly(CodeGenerator):
    """Jinja's code generator without evaluation at compile time.

    Jinja folds constant expressions while it compiles (the optimizer, constant output, an
    ``{% autoescape %}`` value), in the loading thread and outside any budget:
    ``{{ 1000000000 | loop | list }}`` or ``{{ 'x' | center(10**10) }}`` would be built there.
    Here everything is left to the execution (the optimizer is off too: ``optimized=False``)."""

    def _output_child_to_const(self, node: Any, frame: Any, finalize: Any) -> str:
        if type(node) is TemplateData:
            # The template's own text between tags: a literal, nothing to evaluate. Output as a
            # constant (as plain Jinja does), not through finalize() at each execution.
            return super()._output_child_to_const(node, frame, finalize)
        raise Impossible()

    def visit_Concat(self, node: Any, frame: Any) -> None:
        """``a ~ b`` as ``environment.join_operands((a, b))``: Jinja's ``str_join`` (``str()`` of
        each operand, joined), held to ``execution_max_size`` before the join allocates (an
        unchecked ``~`` doubling a string in a loop reached 400 MiB before the watchdog's next
        look). An ``{% autoescape %}`` context keeps Jinja's own (Markup-aware) join."""
        if frame.eval_ctx.volatile or frame.eval_ctx.autoescape:
            super().visit_Concat(node, frame)
            return
        self.write("environment.join_operands((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")

    def visit_Call(self, node: Any, frame: Any, forward_caller: bool = False) -> None:
        """``key("a")``, where ``key`` is one of the environment's ``data_calls``, as
        ``(_c if (_c := key) is environment.data_calls["key"] else <the sandbox's call>)("a")``:
        the function itself is called, without the sandbox's layers (``environment.call``: half
        a microsecond, more than ``key()`` itself, per call of a template that makes 1,000).

        The name is checked at each execution, by identity: a template that sets ``key`` to
        something else, or a ``function_denylist`` that replaces it, gets the sandbox's call.
        The arguments are written once (a nested call is not written twice), positional ones
        only; anything else is Jinja's own call."""
        callee = node.node
        data_calls = getattr(self.environment, "data_calls", {})
        if (
            forward_caller
            or type(callee) is not Name
            or callee.ctx != "load"
            or callee.name not in data_calls
            or node.kwargs
            or node.dyn_args is not None
            or node.dyn_kwargs is not None
            or self.environment.is_async
        ):
            super().visit_Call(node, frame, forward_caller=forward_caller)
            return
        self.write("(_c if (_c := ")
        self.visit(callee, frame)
        self.write(f") is environment.data_calls[{callee.name!r}] else ")
        self.write("environment.sandboxed_call(context, _c")
        self.write(", _loop_vars" if frame.loop_frame else ", None")
        self.write(", _block_vars" if frame.block_frame else ", None")
        self.write("))(")
        for i, arg in enumerate(node.args):
            if i:
                self.write(", ")
            self.visit(arg, frame)
        self.write(")")

    def _plain_output(self, frame: Any, finalize: Any) -> bool:
        return (
            not frame.eval_ctx.volatile
            and not frame.eval_ctx.autoescape
            and finalize.src == "environment.finalize("
        )

    def _output_child_pre(self, node: Any, frame: Any, finalize: Any) -> None:
        """A printed value, ``{{ x }}``, as ``(_p if type(_p := x) is str else
        str(environment.finalize(_p)))``: a string (nearly every printed value) is output as it
        is, without two calls that would give it back unchanged."""
        if self._plain_output(frame, finalize):
            self.write("(_p if type(_p := ")
        else:
            super()._output_child_pre(node, frame, finalize)

    def _output_child_post(self, node: Any, frame: Any, finalize: Any) -> None:
        if self._plain_output(frame, finalize):
            self.write(") is str else str(environment.finalize(_p)))")
        else:
            super()._output_child_post(node, frame, finalize)

    def visit_EvalContextModifier(self, node: Any, frame: Any) -> None:
        for keyword in node.options:
            self.writeline(f"context.eval_ctx.{keyword.key} = ")
            self.visit(keyword.value, frame)
            frame.eval_ctx.volatile = True


class BudgetHooks:
    """The Jinja side of the budgets, for a :class:`~jinja2.sandbox.SandboxedEnvironment`:
    operators, calls and width filters checked before they allocate; nothing evaluated at
    compile time."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})

    code_generator_class: type[CodeGenerator] = _RuntimeOnly

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["optimized"] = False  # no constant folding at compile time (see _RuntimeOnly)
        super().__init__(*args, **kwargs)

    def bound_filters(self, filters: dict[str, Callable[..., Any]]) -> None:
        """Filters with a width, a format or a replacement are checked before they run."""
        for name in _WIDTH_FILTERS & filters.keys():
            filters[name] = _bounded_filter(name, filters[name])

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)  # type: ignore[misc]

    # Plain functions a template may call without the sandbox's per-call checks (the front end
    # sets it to ctemplate's own template functions): see :meth:`call`.
    direct_calls: frozenset[Callable[..., Any]] = frozenset()

    def join_operands(self, parts: tuple[Any, ...]) -> str:
        """``a ~ b ~ ...`` (see ``_RuntimeOnly.visit_Concat``): refused before joining if the
        result would be past ``execution_max_size``."""
        if len(parts) == 2:  # ``prefix ~ i``: nearly every one, and a template may do 1,000
            first, second = parts
            if type(first) is not str:
                first = str(first)
            if type(second) is not str:
                second = str(second)
            size = len(first) + len(second)
            p = current.get(None)
            if p is not None and size > p.options.max_size:
                raise too_big("the operator '~'", size, p.options.max_size)
            return first + second
        texts = [part if type(part) is str else str(part) for part in parts]
        limit = _limit()
        if limit is not None and (size := sum(map(len, texts))) > limit:
            raise too_big("the operator '~'", size, limit)
        return "".join(texts)

    # ctemplate's data functions by name (``key``...), called straight from the generated code
    # (see ``_RuntimeOnly.visit_Call``); each holds its own result to execution_max_size.
    data_calls: Mapping[str, Callable[..., Any]] = {}

    def sandboxed_call(
        self, context: Any, obj: Any, loop_vars: Any, block_vars: Any
    ) -> Callable[..., Any]:
        """``obj`` to be called through :meth:`call`: a name of ``data_calls`` that a template
        has set to something else."""
        return functools.partial(
            self.call, context, obj, _loop_vars=loop_vars, _block_vars=block_vars
        )

    def call(
        __self,
        __context: Any,
        __obj: Any,
        *args: Any,
        _loop_vars: Any = None,
        _block_vars: Any = None,
        **kwargs: Any,
    ) -> Any:
        # Jinja passes ``_loop_vars`` (a call inside a loop) and ``_block_vars`` for functions
        # that take the context; named here, so a direct call needs no dict work for them.
        if type(__obj) is FunctionType and __obj in __self.direct_calls:
            # One of ctemplate's own functions (``key``, ``service``...): not a method of a
            # string or list (nothing for check_call), nothing the sandbox refuses, no context
            # to pass. Calling it directly skips three layers per call, which dominated a
            # template of 1,000 ``key()`` calls. Its result is still checked for size.
            try:
                result = __obj(*args, **kwargs) if kwargs else __obj(*args)
            except StopIteration:  # as Jinja's Context.call
                return __context.environment.undefined(
                    "value was undefined because a callable raised a StopIteration exception"
                )
        else:
            check_call(__obj, args, kwargs)
            if _loop_vars is not None:
                kwargs["_loop_vars"] = _loop_vars
            if _block_vars is not None:
                kwargs["_block_vars"] = _block_vars
            result = super().call(__context, __obj, *args, **kwargs)  # type: ignore[misc]
        if type(result) in _SIZED_EXACT or isinstance(result, SIZED):
            limit = _limit()
            if limit is not None and len(result) > limit:
                what = f"{getattr(__obj, '__name__', 'a call')}()"  # (only when refused)
                raise too_big(what, len(result), limit)
        return result


class BoundedEnvironment(BudgetHooks, SandboxedEnvironment):
    """A sandboxed Jinja environment with the budget checks."""
