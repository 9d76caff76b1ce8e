package fhir

import (
	"encoding/json"
	"errors"
	"github.com/pfrgateway/caddy-pfr/fhir/fhirpath"
	"github.com/pfrgateway/caddy-pfr/internal/testkit"
	"reflect"
	"testing"
)

// TestApplyJSONPatch runs the examples of RFC 6902 Appendix A (those whose
// document is an object) and the error cases around them.
func TestApplyJSONPatch(t *testing.T) {
	tests := []struct {
		name, doc, patch, want string
		status                 int // when want is "", the error status
	}{
		{"A.1 add member", `{"foo":"bar"}`, `[{"op":"add","path":"/baz","value":"qux"}]`, `{"baz":"qux","foo":"bar"}`, 0},
		{"A.2 add array element", `{"foo":["bar","baz"]}`, `[{"op":"add","path":"/foo/1","value":"qux"}]`, `{"foo":["bar","qux","baz"]}`, 0},
		{"A.3 remove member", `{"baz":"qux","foo":"bar"}`, `[{"op":"remove","path":"/baz"}]`, `{"foo":"bar"}`, 0},
		{"A.4 remove array element", `{"foo":["bar","qux","baz"]}`, `[{"op":"remove","path":"/foo/1"}]`, `{"foo":["bar","baz"]}`, 0},
		{"A.5 replace", `{"baz":"qux","foo":"bar"}`, `[{"op":"replace","path":"/baz","value":"boo"}]`, `{"baz":"boo","foo":"bar"}`, 0},
		{"A.6 move member", `{"foo":{"bar":"baz","waldo":"fred"},"qux":{"corge":"grault"}}`, `[{"op":"move","from":"/foo/waldo","path":"/qux/thud"}]`, `{"foo":{"bar":"baz"},"qux":{"corge":"grault","thud":"fred"}}`, 0},
		{"A.7 move array element", `{"foo":["all","grass","cows","eat"]}`, `[{"op":"move","from":"/foo/1","path":"/foo/3"}]`, `{"foo":["all","cows","eat","grass"]}`, 0},
		{"A.8 test success", `{"baz":"qux","foo":["a",2,"c"]}`, `[{"op":"test","path":"/baz","value":"qux"},{"op":"test","path":"/foo/1","value":2}]`, `{"baz":"qux","foo":["a",2,"c"]}`, 0},
		{"A.9 test failure", `{"baz":"qux"}`, `[{"op":"test","path":"/baz","value":"bar"}]`, "", 422},
		{"A.10 add nested member", `{"foo":"bar"}`, `[{"op":"add","path":"/child","value":{"grandchild":{}}}]`, `{"foo":"bar","child":{"grandchild":{}}}`, 0},
		{"A.11 ignore unknown member", `{"foo":"bar"}`, `[{"op":"add","path":"/baz","value":"qux","xyz":123}]`, `{"foo":"bar","baz":"qux"}`, 0},
		{"A.12 add to nonexistent target", `{"foo":"bar"}`, `[{"op":"add","path":"/baz/bat","value":"qux"}]`, "", 422},
		{"A.14 escape ordering", `{"/":9,"~1":10}`, `[{"op":"test","path":"/~01","value":10}]`, `{"/":9,"~1":10}`, 0},
		{"A.15 string not number", `{"/":9,"~1":10}`, `[{"op":"test","path":"/~01","value":"10"}]`, "", 422},
		{"A.16 add array value", `{"foo":["bar"]}`, `[{"op":"add","path":"/foo/-","value":["abc","def"]}]`, `{"foo":["bar",["abc","def"]]}`, 0},

		{"escaped slash", `{"a/b":1}`, `[{"op":"replace","path":"/a~1b","value":2}]`, `{"a/b":2}`, 0},
		{"copy", `{"a":{"b":1}}`, `[{"op":"copy","from":"/a","path":"/c"},{"op":"replace","path":"/c/b","value":2}]`, `{"a":{"b":1},"c":{"b":2}}`, 0},
		{"move onto itself", `{"a":1}`, `[{"op":"move","from":"/a","path":"/a"}]`, `{"a":1}`, 0},
		{"test numbers by value", `{"a":1.0}`, `[{"op":"test","path":"/a","value":1}]`, `{"a":1.0}`, 0},
		{"test objects regardless of order", `{"a":{"x":1,"y":[true,null]}}`, `[{"op":"test","path":"/a","value":{"y":[true,null],"x":1}}]`, `{"a":{"x":1,"y":[true,null]}}`, 0},
		{"replace whole document", `{"a":1}`, `[{"op":"replace","path":"","value":{"b":2}}]`, `{"b":2}`, 0},
		{"all or nothing", `{"a":1}`, `[{"op":"add","path":"/b","value":2},{"op":"remove","path":"/nope"}]`, "", 422},

		{"not an array", `{}`, `{"op":"add"}`, "", 400},
		{"not JSON", `{}`, `[`, "", 400},
		{"trailing data", `{}`, `[] []`, "", 400},
		{"operation not an object", `{}`, `["add"]`, "", 400},
		{"unknown op", `{}`, `[{"op":"merge","path":"/a"}]`, "", 400},
		{"op missing", `{}`, `[{"path":"/a","value":1}]`, "", 400},
		{"path missing", `{}`, `[{"op":"add","value":1}]`, "", 400},
		{"path not a string", `{}`, `[{"op":"add","path":1,"value":1}]`, "", 400},
		{"value missing", `{"a":1}`, `[{"op":"replace","path":"/a"}]`, "", 400},
		{"null value is a value", `{"a":1}`, `[{"op":"replace","path":"/a","value":null}]`, `{"a":null}`, 0},
		{"from missing", `{"a":1}`, `[{"op":"copy","path":"/b"}]`, "", 400},
		{"pointer without slash", `{"a":1}`, `[{"op":"remove","path":"a"}]`, "", 400},
		{"bad escape", `{"a":1}`, `[{"op":"remove","path":"/a~2"}]`, "", 400},
		{"trailing tilde", `{"a":1}`, `[{"op":"remove","path":"/a~"}]`, "", 400},
		{"move into own child", `{"a":{"b":1}}`, `[{"op":"move","from":"/a","path":"/a/b/c"}]`, "", 400},

		{"remove missing", `{"a":1}`, `[{"op":"remove","path":"/b"}]`, "", 422},
		{"replace missing", `{"a":1}`, `[{"op":"replace","path":"/b","value":1}]`, "", 422},
		{"remove whole document", `{"a":1}`, `[{"op":"remove","path":""}]`, "", 422},
		{"index out of range", `{"a":[1]}`, `[{"op":"add","path":"/a/2","value":1}]`, "", 422},
		{"leading zero index", `{"a":[1,2]}`, `[{"op":"remove","path":"/a/01"}]`, "", 422},
		{"negative index", `{"a":[1,2]}`, `[{"op":"remove","path":"/a/-1"}]`, "", 422},
		{"dash outside add", `{"a":[1,2]}`, `[{"op":"remove","path":"/a/-"}]`, "", 422},
		{"descend into string", `{"a":"x"}`, `[{"op":"add","path":"/a/b","value":1}]`, "", 422},
		{"result not an object", `{"a":1}`, `[{"op":"replace","path":"","value":[1]}]`, "", 422},
		{"test missing path", `{"a":1}`, `[{"op":"test","path":"/b","value":1}]`, "", 422},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			doc := testkit.DecodeFHIR(t, []byte(tc.doc))
			before := deepCopy(doc)
			got, err := ApplyJSONPatch(doc, []byte(tc.patch))
			if !reflect.DeepEqual(doc, before) {
				t.Errorf("the input document was modified: %v", doc)
			}
			if tc.want == "" {
				var fe *Error
				if !errors.As(err, &fe) || fe.Status != tc.status {
					t.Fatalf("got %v, %v; want status %d", got, err, tc.status)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if want := testkit.DecodeFHIR(t, []byte(tc.want)); !fhirpath.JSONEqual(got, want) {
				gotJSON, _ := json.Marshal(got)
				t.Errorf("got %s, want %s", gotJSON, tc.want)
			}
		})
	}
}

// TestApplyJSONPatchOwnership shows the use the gateway makes of a patch:
// the patched result goes through CheckWrite, which refuses a patch that
// aims an Observation at another Patient or changes its id.
func TestApplyJSONPatchOwnership(t *testing.T) {
	stored := testkit.DecodeFHIR(t, []byte(obs(`"id":"o1",`+self)))
	p := DefaultOwnershipPolicy()
	for patch, ok := range map[string]bool{
		`[{"op":"replace","path":"/status","value":"amended"}]`:                                                   true,
		`[{"op":"replace","path":"/subject/reference","value":"Patient/other"}]`:                                  false,
		`[{"op":"add","path":"/performer","value":[{"reference":"Patient/other"}]}]`:                              false,
		`[{"op":"replace","path":"/id","value":"o2"}]`:                                                            false,
		`[{"op":"remove","path":"/subject"}]`:                                                                     false,
		`[{"op":"add","path":"/extension","value":[{"url":"x","valueReference":{"reference":"Patient/other"}}]}]`: false,
	} {
		patched, err := ApplyJSONPatch(stored, []byte(patch))
		if err != nil {
			t.Fatalf("%s: %v", patch, err)
		}
		issues := testOwner.CheckWrite("PATCH", "Observation/o1", "", patched, p)
		if (len(issues) == 0) != ok {
			t.Errorf("%s: issues %+v", patch, issues)
		}
	}
}
