"""consul-template's pure helpers in Jinja: each as a filter and as a function, and their errors."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime

import pytest
import yaml

from ctemplate.config import Config, TemplateConfig
from ctemplate.consul.queries import HealthServiceQuery, KVListQuery
from ctemplate.language import local
from ctemplate.language.jinja import FILTERS, GLOBALS, TemplateEngine


def render(text: str, tmp_path, data=None, **options) -> str:
    src = tmp_path / "t.j2"
    src.write_text(text)
    tc = TemplateConfig(destination="out", source=str(src), origin="ct.hcl: template[1]", **options)
    ex = TemplateEngine(Config()).load(tc).execute(data or {})
    if ex.error is not None:
        raise ex.error
    assert ex.text is not None, ex.missing
    return ex.text


def error(text: str, tmp_path, data=None, **options) -> str:
    """The error message without the "<file>:" prefix."""
    src = tmp_path / "t.j2"
    src.write_text(text)
    tc = TemplateConfig(destination="out", source=str(src), origin="ct.hcl: template[1]", **options)
    ex = TemplateEngine(Config()).load(tc).execute(data or {})
    assert ex.error is not None, ex.text
    return str(ex.error).removeprefix(f"{src}:")


PAIRS = KVListQuery(prefix="app/").decode(
    [
        {"Key": "app/", "Value": None},
        {"Key": "app/redis/host", "Value": "cmVkaXM="},  # redis
        {"Key": "app/redis/port", "Value": "NjM3OQ=="},  # 6379
        {"Key": "app/web/a/b", "Value": "eA=="},  # x
        {"Key": "app/top", "Value": "dA=="},  # t
    ]
)


def _svc(node: str, sid: str, tags: list[str], meta: dict[str, str], port: int = 80):
    return HealthServiceQuery(name="web").decode(
        [
            {
                "Node": {"Node": node, "Address": "10.0.0.1"},
                "Service": {"ID": sid, "Service": "web", "Port": port, "Tags": tags, "Meta": meta},
                "Checks": [],
            }
        ]
    )[0]


SERVICES = (
    _svc("n1", "a", ["prod", "v1"], {"zone": "eu-1", "weight": "10"}),
    _svc("n2", "b", ["prod"], {"zone": "us/2", "weight": "5"}, port=81),
    _svc("n3", "c", ["canary"], {}),
)
DATA = {"kv.list(app/)": PAIRS, "health.service(web|passing)": SERVICES}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        # math: the piped value is the left operand (consul-template: the last argument)
        ("{{ 10 | add(3) }} {{ add(10, 3) }} {{ 1.5 | add(1) }}", "13 13 2.5"),
        ("{{ 10 | subtract(3) }} {{ subtract(10, 3) }}", "7 7"),
        ("{{ 6 | multiply(7) }} {{ multiply(2.5, 2) }}", "42 5.0"),
        ("{{ 7 | divide(2) }} {{ -7 | divide(2) }} {{ 7.0 | divide(2) }}", "3 -3 3.5"),
        ("{{ 7 | modulo(3) }} {{ -7 | modulo(3) }} {{ modulo(7, -3) }}", "1 -1 1"),
        ("{{ 3 | minimum(5) }} {{ maximum(3, 5) }} {{ 2.5 | maximum(2) }}", "3 5 2.5"),
        ("{% for i in loop(3) %}{{ i }}{% endfor %} {{ loop(2, 5) | join(',') }}", "012 2,3,4"),
        ('{{ loop("1", "3") | list }} {{ 3 | loop | list }}', "[1, 2] [0, 1, 2]"),
        # strings
        ('{{ "Hello" | toLower }} {{ toUpper("hello") }}', "hello HELLO"),
        ('{{ "hello wORLD-x y_z" | toTitle }}', "Hello WORLD-X Y_z"),
        ('[{{ "  a b \n" | trimSpace }}]', "[a b]"),
        ('{{ "xxhixx" | trim("x") }} [{{ "  hi " | trim }}]', "hi [hi]"),
        ('{{ "v1.2" | trimPrefix("v") }} {{ "a.conf" | trimSuffix(".conf") }}', "1.2 a"),
        ('{{ "a-b-c" | replaceAll("-", "+") }}', "a+b+c"),
        ('{{ " a,b ,c " | split(",") }} {{ "" | split(",") }}', "['a', 'b ', 'c'] []"),
        ('{{ "a=1,b=2,junk" | splitToMap(",", "=") }}', "{'a': '1', 'b': '2'}"),
        ('{{ join(["a", "b"], ",") }} {{ ["x", "y"] | join("-") }}', "a,b x-y"),
        ('{{ "a\nb\n\nc\n" | indent(2) }}', "  a\n  b\n\n  c\n"),
        ('{{ "a\nb" | indent(2, first=false) }}|{{ indent("x", 0) }}', "a\n  b|x"),
        # hashes and encodings
        (
            '{{ "abc" | sha256Hex }}',
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        ),
        ('{{ "abc" | md5sum }}', "900150983cd24fb0d6963f7d28e17f72"),
        (
            '{{ "msg" | hmacSHA256Hex("key") }}',
            "2d93cbc1be167bcb1637a4a23cbff01a7878f0c50ee833954ea5221bb1b8c628",
        ),
        ('{{ "a?b>" | base64Encode }} {{ "YT9iPg==" | base64Decode }}', "YT9iPg== a?b>"),
        ('{{ "a?b>" | base64URLEncode }} {{ base64URLDecode("YT9iPg==") }}', "YT9iPg== a?b>"),
        # regular expressions (Go's $1 replacement syntax)
        (
            '{{ "web-01" | regexMatch("^web-[0-9]+$") }} {{ regexMatch("db", "^web") }}',
            "True False",
        ),
        ('{{ "a.b" | regexReplaceAll("(a)\\\\.(b)", "$2-${1}$$") }}', "b-a$"),
        ('{{ "k=v" | regexReplaceAll("(?P<k>\\\\w)=(?P<v>\\\\w)", "$v=$k $1x|") }}', "v=k |"),
        # parsing (Go's strconv)
        ('{{ "true" | parseBool }} {{ "F" | parseBool }} {{ "" | parseBool }}', "True False False"),
        ('{{ "-42" | parseInt }} {{ "" | parseInt }} {{ "7" | parseUint }}', "-42 0 7"),
        ('{{ "1.5e3" | parseFloat }} {{ "-2" | parseFloat }}', "1500.0 -2.0"),
        ('{{ "42" | parseInt | add(1) }}', "43"),
        (
            '{{ (\'{"a": [1, {"b": null}]}\' | parseJSON).a[1] }} {{ "" | parseJSON }}',
            "{'b': None} {}",
        ),
        ('{{ ("a: 1\\nb: [x, y]\\n" | parseYAML).b }} {{ parseYAML("") }}', "['x', 'y'] {}"),
        # encoders: keys sorted, <>& escaped like Go's json.Marshal
        ('{{ {"b": 1, "a": "<&>"} | toJSON }}', '{"a":"\\u003c\\u0026\\u003e","b":1}'),
        ('{{ {"a": "<"} | toUnescapedJSON }}', '{"a":"<"}'),
        ('{{ {"a": [1, 2.0]} | toJSONPretty }}', '{\n  "a": [\n    1,\n    2\n  ]\n}'),
        ('{{ {"b": [1, 2], "a": {"x": "y"}} | toYAML }}', "a:\n  x: y\nb:\n- 1\n- 2"),
        ('{{ "plain" | toYAML }} {{ toYAML(3) }}', "plain 3"),
        # collections
        ('{{ ["a", "b"] | contains("a") }} {{ contains("haystack", "st") }}', "True True"),
        ('{{ "a" | in(["a", "b"]) }} {{ in("z", ["a"]) }} {{ "b" in ["b"] }}', "True False True"),
        ('{{ ["a", "b"] | containsAll(["a", "b"]) }} {{ ["a"] | containsAll([]) }}', "True True"),
        ('{{ ["a", "b"] | containsAny(["x", "b"]) }} {{ ["a"] | containsAny([]) }}', "True False"),
        ('{{ ["a"] | containsNone(["x"]) }} {{ ["a"] | containsNone([]) }}', "True True"),
        ('{{ ["a"] | containsNotAll(["a", "x"]) }} {{ ["a"] | containsNotAll([]) }}', "True False"),
        ('{{ {"a/b": 1, "a/c": 2, "d": 3} | explodeMap }}', "{'a': {'b': 1, 'c': 2}, 'd': 3}"),
        (
            '{{ {"a": 1, "n": {"x": 1}} | mergeMap({"a": 2, "b": 3, "n": {"x": 2, "y": 2}}) }}',
            "{'a': 1, 'b': 3, 'n': {'x': 1, 'y': 2}}",
        ),
        ('{{ {"a": 1} | mergeMapWithOverride({"a": 2, "b": 3}) }}', "{'a': 2, 'b': 3}"),
    ],
)
def test_helpers(template, expected, tmp_path):
    assert render(template, tmp_path) == expected


def test_to_toml_round_trips_through_tomllib(tmp_path):
    text = render(
        '{{ {"name": "web \\"x\\"", "port": 80, "ratio": 0.5, "on": true, "none": none, '
        '"tags": ["a", "b"], "db": {"host": "h", "opts": {"tls": false}}, '
        '"servers": [{"n": 1}, {"n": 2}], "odd key": "\\n"} | toTOML }}',
        tmp_path,
    )
    assert text == (
        'name = "web \\"x\\""\n'
        '"odd key" = "\\n"\n'
        "on = true\n"
        "port = 80\n"
        "ratio = 0.5\n"
        'tags = ["a", "b"]\n'
        "\n"
        "[db]\n"
        'host = "h"\n'
        "\n"
        "[db.opts]\n"
        "tls = false\n"
        "\n"
        "[[servers]]\n"
        "n = 1\n"
        "\n"
        "[[servers]]\n"
        "n = 2"
    )
    assert tomllib.loads(text) == {
        "name": 'web "x"',
        "odd key": "\n",
        "on": True,
        "port": 80,
        "ratio": 0.5,
        "tags": ["a", "b"],
        "db": {"host": "h", "opts": {"tls": False}},
        "servers": [{"n": 1}, {"n": 2}],
    }


def test_records_encode_with_their_field_names(tmp_path):
    text = render('{{ (service("web") | first).Weights | toJSON }}', tmp_path, DATA)
    assert text == '{"Passing":1,"Warning":1}'
    pair = yaml.safe_load(render('{{ tree("app/")[0] | toYAML }}', tmp_path, DATA))
    assert pair["Path"] == "app/redis/host" and pair["Value"] == "redis"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        (
            '{% for tag, svcs in service("web") | byTag | items %}'
            "{{ tag }}={{ svcs | map(attribute='ID') | join(',') }} {% endfor %}",
            "canary=c prod=a,b v1=a ",
        ),
        (
            '{% for tag, svcs in byTag(service("web")).items() %}{{ tag }} {% endfor %}',
            "canary prod v1 ",
        ),
        (
            '{% for port, svcs in service("web") | byPort | items %}'
            "{{ port }}:{{ svcs | length }} {% endfor %}",
            "80:2 81:1 ",
        ),
        (
            '{% for group, svcs in service("web") | byMeta("zone,weight|int") | items %}'
            "{{ group }}={{ svcs | map(attribute='ID') | join(',') }} {% endfor %}",
            "_no_zone__00000=c eu-1_00010=a us_2_00005=b ",
        ),
        (
            '{% for top, pairs in tree("app/") | byKey | items %}'
            "{{ top }}:{% for k, p in pairs.items() %}{{ k }}={{ p.Value }},{% endfor %} "
            "{% endfor %}",
            "redis:host=redis,port=6379, web:a/b=x, ",
        ),
        (
            '{{ tree("app/") | explode }}',
            "{'redis': {'host': 'redis', 'port': '6379'}, 'top': 't', 'web': {'a': {'b': 'x'}}}",
        ),
    ],
)
def test_grouping_helpers(template, expected, tmp_path):
    assert render(template, tmp_path, DATA) == expected


@pytest.mark.parametrize(
    ("template", "message"),
    [
        (
            '{{ "3" | add(1) }}',
            "add: a string of 1 character is not a number (convert it with parseInt or parseFloat)",
        ),
        ("{{ 1 | divide(0) }}", "divide: division by zero"),
        ("{{ 1.5 | modulo(1) }}", "modulo: needs two whole numbers"),
        ('{{ "x" | indent(-1) }}', "indent: indent value must be a positive integer"),
        (
            '{{ "yes" | parseBool }}',
            "parseBool: a string of 3 characters is not a boolean (true/false, 1/0, t/f)",
        ),
        ('{{ "1.5" | parseInt }}', "parseInt: a string of 3 characters is not a whole number"),
        (
            '{{ "-1" | parseUint }}',
            "parseUint: a string of 2 characters is not a whole number >= 0",
        ),
        (
            '{{ "99999999999999999999" | parseInt }}',
            "parseInt: a string of 20 characters is out of range",
        ),
        ('{{ "1,5" | parseFloat }}', "parseFloat: a string of 3 characters is not a number"),
        (
            '{{ "{" | parseJSON }}',
            "parseJSON: not JSON: Expecting property name enclosed in double quotes: "
            "line 1 column 2 (char 1)",
        ),
        (
            '{{ "%%%" | base64Decode }}',
            "base64Decode: a string of 3 characters is not valid base64",
        ),
        (
            '{{ "x" | regexMatch("(") }}',
            "regexMatch: bad regular expression: missing ): (",
        ),
        (
            '{{ ["a"] | containsAll("a") }}',
            "containsAll: the values to look for must be a list, got a string of 1 character",
        ),
        ("{{ [1, 2] | toTOML }}", "toTOML: needs a map, got list"),
        ("{{ [1] | explodeMap }}", "explodeMap: needs a map, got list"),
        (
            '{{ {"a": 1, "a/b": 2} | explodeMap }}',
            "explodeMap: not a map: 'a/b': 'a' already has a value",
        ),
        ("{{ loop(1, 2, 3) }}", "loop: expected 1 or 2 arguments, got 3"),
        ('{{ "x" | byTag }}', "byTag: needs a list of services, got str"),
    ],
)
def test_helper_errors(template, message, tmp_path):
    assert error(template, tmp_path) == f"1: {message}"


def test_timestamp_formats(tmp_path, monkeypatch):
    monkeypatch.setattr(local, "now", lambda: datetime(2024, 3, 9, 7, 5, 4, 123456, tzinfo=UTC))
    text = render(
        '{{ timestamp() }}|{{ timestamp("unix") }}|{{ timestamp("%Y-%m-%d %H:%M") }}|'
        '{{ timestamp("2006-01-02T15:04:05.000Z07:00") }}|'
        '{{ timestamp("Mon Jan _2 3:04PM MST 2006") }}|{{ timestamp("02/01/06 .999999") }}',
        tmp_path,
    )
    assert text == (
        "2024-03-09T07:05:04Z|1709967904|2024-03-09 07:05|2024-03-09T07:05:04.123Z|"
        "Sat Mar  9 7:05AM UTC 2024|09/03/24 .123456"
    )


def test_missing_map_keys_are_empty_unless_error_on_missing_key(tmp_path):
    text = '{{ service("web")[0].ServiceMeta.nosuch }}|{{ {"a": 1}.b | default("d") }}'
    assert render(text, tmp_path, DATA) == "|d"
    assert error(text, tmp_path, DATA, error_on_missing_key=True) == (
        "1: dict has no key 'nosuch' (use .get(\"key\", default) or | default(...) for "
        "optional keys)"
    )
    # A misspelt record field is an error either way.
    assert error('{{ service("web")[0].Adress }}', tmp_path, DATA) == (
        "1: HealthService has no attribute 'Adress' (did you mean 'Address'?)"
    )


def test_every_helper_is_a_filter_and_a_function():
    names = [
        *("byKey", "byTag", "byMeta", "contains", "containsAll", "containsAny", "containsNone"),
        *("containsNotAll", "explode", "explodeMap", "in", "indent", "trimSpace", "parseBool"),
        *("parseFloat", "parseInt", "parseUint", "parseJSON", "parseYAML", "regexMatch"),
        *("regexReplaceAll", "replaceAll", "sha256Hex", "md5sum", "split", "splitToMap"),
        *("toJSON", "toJSONPretty", "toYAML", "toTOML", "toLower", "toUpper", "toTitle"),
        *("base64Encode", "base64Decode", "base64URLEncode", "base64URLDecode", "add"),
        *("subtract", "multiply", "divide", "modulo", "minimum", "maximum", "loop"),
    ]
    assert [n for n in names if n not in FILTERS or n not in GLOBALS] == []
    assert "join" in GLOBALS  # the filter is Jinja's own, with the same argument order
