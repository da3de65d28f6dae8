"""Execution budgets, in process: sizes in the configuration, the watchdog interrupting a real
worker thread, checks before a value is made, RE2 and the YAML alias count."""

from __future__ import annotations

import threading
import time

import pytest

from ctemplate.config import Config, TemplateConfig
from ctemplate.config.values import parse_size
from ctemplate.errors import ConfigError
from ctemplate.language import budget, helpers
from ctemplate.language.jinja import TemplateEngine


@pytest.mark.parametrize(
    ("value", "size"),
    [
        (1, 1),
        (4096, 4096),
        ("100", 100),
        ("1KB", 1000),
        ("1KiB", 1024),
        ("64MiB", 64 << 20),
        ("2 gb", 2 * 1000**3),
        ("1GiB", 1 << 30),
    ],
)
def test_sizes(value, size):
    assert parse_size(value, where="k") == size


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "k: 0 must be greater than zero"),
        ("0MiB", 'k: "0MiB" must be greater than zero'),
        ("lots", 'k: "lots" is not a size; write e.g. "1MiB", "512KiB" or a number of bytes'),
        ("1.5MiB", 'k: "1.5MiB" is not a size; write e.g. "1MiB", "512KiB" or a number of bytes'),
        (True, 'k: expected a size such as "1MiB", got a boolean'),
        ([1], 'k: expected a size such as "1MiB", got a list'),
    ],
)
def test_bad_sizes(value, message):
    with pytest.raises(ConfigError) as info:
        parse_size(value, where="k")
    assert str(info.value) == message


def _run(text: str, *, timeout: float = 5.0, max_size: int = 1 << 20):
    tc = TemplateConfig(
        destination="/dev/null",
        contents=text,
        execution_timeout=timeout,
        execution_max_size=max_size,
        origin="t",
    )
    compiled = TemplateEngine(Config()).load(tc)
    return budget.run(compiled.execute, {}, name=compiled.name, timeout=timeout, max_size=max_size)


def test_a_value_returned_by_a_function_is_checked_against_the_size_budget():
    """key() and the other functions are called directly (not through the sandbox's layers);
    what they return is still held to execution_max_size."""
    limit = 1 << 20
    tc = TemplateConfig(
        destination="/dev/null",
        contents='{{ key("small") }}{{ key("big") }}',
        execution_max_size=limit,
        origin="t",
    )
    compiled = TemplateEngine(Config()).load(tc)
    data = {"kv.block(small)": "x" * 10, "kv.block(big)": "y" * (limit + 1)}
    execution = budget.run(compiled.execute, data, name=compiled.name, timeout=5, max_size=limit)
    assert str(execution.error) == (
        "t.contents:1: key() would make a value of 1,048,577 bytes or items, past "
        "execution_max_size (1,048,576); raise execution_max_size if this is meant"
    )
    data["kv.block(big)"] = "y" * (limit - 10)
    execution = budget.run(compiled.execute, data, name=compiled.name, timeout=5, max_size=limit)
    assert execution.text == "x" * 10 + "y" * (limit - 10)


@pytest.mark.parametrize(
    ("text", "cache_key", "value", "what"),
    [
        ('{{ keyOrDefault("big", "") }}', "kv.get(big)", "y" * 11, "keyOrDefault()"),
        ('{{ service("web") }}', "health.service(web|passing)", tuple(range(11)), "service()"),
        ("{{ services() }}", "catalog.services", tuple(range(11)), "services()"),
        ('{{ connect("web") }}', "health.connect(web|passing)", tuple(range(11)), "connect()"),
    ],
)
def test_data_functions_called_directly_hold_their_result_to_the_size_budget(
    text, cache_key, value, what
):
    """The data functions a template calls without the sandbox's call (jinja.DATA_CALLS)
    check their own result, named as the template calls them."""
    tc = TemplateConfig(destination="/dev/null", contents=text, execution_max_size=10, origin="t")
    compiled = TemplateEngine(Config()).load(tc)
    execution = budget.run(compiled.execute, {cache_key: value}, name="t", timeout=5, max_size=10)
    assert str(execution.error) == (
        f"t.contents:1: {what} would make a value of 11 bytes or items, past "
        "execution_max_size (10); raise execution_max_size if this is meant"
    )


def test_the_tilde_operator_is_held_to_the_size_budget():
    """``~`` is refused before it joins past execution_max_size, as ``+`` is: a string doubled
    in a loop stops at the limit, not when the watchdog next looks at the process's memory."""
    doubling = (
        '{% set ns = namespace(s="x" * 1000) %}{% for i in range(30) %}'
        "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}"
    )
    execution = _run(doubling, max_size=1 << 20)
    assert str(execution.error) == (
        "t.contents:1: the operator '~' would make a value of 2,048,000 bytes or items, past "
        "execution_max_size (1,048,576); raise execution_max_size if this is meant"
    )
    assert _run('{{ "a" ~ 1 ~ none ~ [2] }}', max_size=9).text == "a1None[2]"  # 9 characters
    assert "the operator '~' would make a value of 9 bytes" in str(
        _run('{{ "a" ~ 1 ~ none ~ [2] }}', max_size=8).error
    )
    # Two operands (a path of its own, the common ``prefix ~ i``): the same boundary.
    assert _run('{{ "ab" ~ 1234567 }}', max_size=9).text == "ab1234567"
    assert "the operator '~' would make a value of 9 bytes" in str(
        _run('{{ "ab" ~ 1234567 }}', max_size=8).error
    )
    assert _run("{{ none ~ [1] }}", max_size=9).text == "None[1]"


def test_watchdog_stops_a_loop_that_writes_nothing():
    started = time.monotonic()
    execution = _run(
        "a\n{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        timeout=0.5,
    )
    took = time.monotonic() - started
    assert str(execution.error) == (
        "t.contents:2: execution stopped: did not finish within 0.5s; raise execution_timeout "
        "if it needs longer"
    )
    assert took < 3


def test_interrupt_all_stops_every_running_execution_in_its_thread():
    results = []
    loop = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    threads = [
        threading.Thread(target=lambda: results.append(_run(loop, timeout=3600)), daemon=True)
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    assert budget.interrupt_all() == 3
    for thread in threads:
        thread.join(5)
    assert [str(r.error) for r in results] == [
        "t.contents:1: execution stopped: ctemplate is stopping"
    ] * 3


def test_a_finished_execution_is_never_interrupted_later():
    """The thread goes on with other work after its execution: no interrupt arrives late."""
    assert _run("ok", timeout=0.05).text == "ok"
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:  # would raise Interrupted if one were pending
        sum(range(1000))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{{ 'x' * 10**7 }}", "the operator '*' would make a value of 10,000,000 bytes or items"),
        ("{{ [1] * 10**7 }}", "the operator '*' would make a value of 10,000,000 bytes or items"),
        ("{{ 7 ** (10**7) }}", "the operator '**' would make a value of 10,000,000 bytes or items"),
        ("{{ '%2000000d' % 1 }}", "the operator '%' would make a value of 2,000,000 bytes"),
        ("{{ '{:>2000000}'.format(1) }}", "str.format() would make a value of 2,000,000 bytes"),
        ("{{ 'x'.zfill(2000000) }}", "str.zfill() would make a value of 2,000,000 bytes"),
        ("{{ 'ab' | center(2000000) }}", "center() would make a value of 2,000,000 bytes"),
        ("{{ ('a' * 1000) | replace('a', 'bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb') }}", ""),
        ("{{ ('a' * 100000) | replace('a', 'bbbbbbbbbbbbbbbbbbbb') }}", "replace() would make"),
        ("{{ ('a' * 100000).replace('a', 'bbbbbbbbbbbbbbbbbbbb') }}", "str.replace() would make"),
        ("{{ 'a\\nb' | indent('x' * 600000) }}", "indent() would make a value of 1,200,000"),
    ],
)
def test_values_past_the_size_budget_are_refused_before_they_are_made(text, message):
    execution = _run(text)
    if not message:
        assert execution.error is None and execution.text is not None
        return
    assert str(execution.error).startswith(f"t.contents:1: {message}"), execution.error
    assert str(execution.error).endswith(
        "past execution_max_size (1,048,576); raise execution_max_size if this is meant"
    )


def test_constant_filters_are_not_folded_at_compile_time():
    """Jinja folds filters of constants when it compiles, outside any budget: they must run in
    the execution instead (else ``load`` itself would build a billion-item list)."""
    started = time.monotonic()
    execution = _run("{{ 1000000000 | loop | list | length }}", timeout=1)
    assert time.monotonic() - started < 5
    assert str(execution.error) == (
        "t.contents:1: loop: 1,000,000,000 numbers is past 16,384 (execution_max_size / 64); "
        "raise execution_max_size if this is meant"
    )
    assert (
        _run("{{ 'x' | center(2000000) }}", max_size=4 << 20).text
        == " " * 999999 + "x" + " " * 1000000
    )


def test_output_past_the_size_budget():
    execution = _run("{% for i in range(2000) %}{{ 'x' * 1000 }}{% endfor %}")
    assert str(execution.error) == (
        "t.contents: the output passed execution_max_size (1,048,576 bytes); raise "
        "execution_max_size if this is meant"
    )


def test_regex_is_linear_and_speaks_go_syntax():
    started = time.monotonic()
    assert helpers.regex_match("a" * 100_000 + "b", "(a+)+$") is False
    assert time.monotonic() - started < 1
    assert helpers.regex_replace_all("web-1,web-2", r"web-(?P<n>\d)", "srv${n}") == "srv1,srv2"
    with pytest.raises(Exception) as info:
        helpers.regex_match("aa", r"(a)\1")
    assert str(info.value) == ("regexMatch: bad regular expression: invalid escape sequence: \\1")


def test_yaml_alias_bomb_is_refused_before_it_is_built():
    bomb = 'a: &a ["x","x","x","x","x","x","x","x","x","x"]\n'
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        bomb += f"{name}: &{name} [" + ",".join([f"*{prev}"] * 10) + "]\n"
    with pytest.raises(Exception) as info:
        helpers.parse_yaml(bomb)
    assert str(info.value) == (
        "parseYAML: the document expands to more than 1,048,576 nodes through its aliases (an "
        "alias bomb?); raise execution_max_size if it is meant"
    )
    assert helpers.parse_yaml("x: &x {a: 1}\ny: *x\n") == {"x": {"a": 1}, "y": {"a": 1}}
    with pytest.raises(Exception) as info:
        helpers.parse_yaml("&a [*a]")
    assert str(info.value) == "parseYAML: the document refers to itself (a recursive alias)"


def test_a_template_function_result_past_the_size_budget_is_refused(monkeypatch):
    """ctemplate's own functions are called without the sandbox's per-call layers (speed), but
    what they return is still held to execution_max_size, naming the function."""
    monkeypatch.setenv("CTEMPLATE_TEST_BIG", "y" * 100_000)
    execution = _run('{{ env("CTEMPLATE_TEST_BIG") }}', max_size=65536)
    assert str(execution.error) == (
        "t.contents:1: env() would make a value of 100,000 bytes or items, past "
        "execution_max_size (65,536); raise execution_max_size if this is meant"
    )
    assert _run('{{ env("CTEMPLATE_TEST_BIG") | length }}', max_size=200_000).text == "100000"


def test_template_functions_called_directly_are_ctemplates_own():
    """The direct-call set holds only the registry's plain functions: Jinja's own globals
    (``range``, which the sandbox bounds, ``lipsum``, ``dict``...) keep the sandbox's call."""
    from ctemplate.language.jinja import _DIRECT_CALLS, GLOBALS

    engine = TemplateEngine(Config())
    assert engine.env.direct_calls == _DIRECT_CALLS
    assert _DIRECT_CALLS.issubset(GLOBALS.values())
    for name in ("range", "lipsum", "dict", "cycler", "joiner", "namespace"):
        assert engine.env.globals[name] not in _DIRECT_CALLS
    assert _run("{{ range(10**9) | list }}").error is not None  # still refused by the sandbox
