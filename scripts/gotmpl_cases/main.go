package main

import (
	"encoding/json"
	"errors"
	"os"
	"strings"
	"text/template"
)

type W struct{ Passing, Warning int }
type S struct {
	Name string
	Port int
	Tags []string
	Meta map[string]string
	W    W
}

type Case struct {
	T     string `json:"t"`
	Error bool   `json:"error"`
	Left  string `json:"left"`
	Right string `json:"right"`
}
type Res struct {
	Out string `json:"out"`
	Err string `json:"err"`
}

func data() map[string]interface{} {
	st := S{Name: "web", Port: 80, Tags: []string{"a", "b"}, Meta: map[string]string{"k": "v"}, W: W{1, 2}}
	return map[string]interface{}{
		"s": "hello", "i": 42, "neg": -7, "f": 1.5, "big": 123456789.0, "t": true, "fls": false,
		"z": 0, "e": "", "uni": "héllo", "nil": nil,
		"strs": []string{"a", "b", "c"}, "ifaces": []interface{}{1, "a", nil, 2.5}, "empty": []string{},
		"sm": map[string]string{"k": "v", "a": "b"},
		"im": map[string]interface{}{"x": 1, "n": nil, "sub": map[string]interface{}{"y": "z"}},
		"intm": map[int]string{10: "ten", 2: "two", -1: "minus"},
		"st": st, "sts": []S{st, {Name: "db", Port: 5432}},
		"nested": map[string]interface{}{"a": map[string]interface{}{"b": []interface{}{"x", map[string]interface{}{"c": "deep"}}}},
	}
}

func main() {
	var cases []Case
	json.NewDecoder(os.Stdin).Decode(&cases)
	funcs := template.FuncMap{
		"upper": strings.ToUpper,
		"fail":  func() (string, error) { return "", errors.New("boom") },
		"join":  func(sep string, l []string) string { return strings.Join(l, sep) },
		"strs":  func(a ...string) []string { return a },
		"add":   func(a, b int) int { return a + b },
	}
	var out []Res
	for _, c := range cases {
		var r Res
		opt := "missingkey=zero"
		if c.Error {
			opt = "missingkey=error"
		}
		t, err := template.New("t").Delims(c.Left, c.Right).Funcs(funcs).Option(opt).Parse(c.T)
		if err != nil {
			r.Err = err.Error()
		} else {
			var b strings.Builder
			err = t.Execute(&b, data())
			r.Out = b.String()
			if err != nil {
				r.Err = err.Error()
			}
		}
		out = append(out, r)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetEscapeHTML(false)
	enc.Encode(out)
}
