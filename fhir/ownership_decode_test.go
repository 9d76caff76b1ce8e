package fhir

import (
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

func TestDecodeResource(t *testing.T) {
	for name, data := range testkit.Synthea(t) {
		got, err := DecodeResource(data)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if want := testkit.DecodeFHIR(t, data); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: differs from encoding/json", name)
		}
	}
	got, err := DecodeResource([]byte(` {"a":[1.50,{"b":null,"c":true}],"d":"é"} ` + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if want := testkit.DecodeFHIR(t, []byte(`{"a":[1.50,{"b":null,"c":true}],"d":"é"}`)); !reflect.DeepEqual(got, want) {
		t.Errorf("got %v", got)
	}
	if got, err := DecodeResource([]byte(`{"a":[]}`)); err != nil || got["a"] == nil {
		t.Errorf("empty array: %v %v", got, err)
	}
}

func TestDecodeResourceRefuses(t *testing.T) {
	for name, body := range map[string]string{
		"duplicate member":           `{"resourceType":"Observation","subject":{"reference":"Patient/other"},"subject":{"reference":"Patient/pfr-john"}}`,
		"duplicate nested":           `{"resourceType":"Observation","subject":{"reference":"Patient/other","reference":"Patient/pfr-john"}}`,
		"duplicate escaped":          `{"resourceType":"Observation","subject":{"reference":"Patient/other"},"\u0073ubject":{"reference":"Patient/pfr-john"}}`,
		"duplicate in array item":    `{"performer":[{"reference":"Patient/other","reference":"Practitioner/1"}]}`,
		"invalid UTF-8":              "{\"subject\":{\"reference\":\"Patient/oth\xffer\"}}",
		"trailing data":              `{"resourceType":"Patient"} {"resourceType":"Patient"}`,
		"trailing garbage":           `{"resourceType":"Patient"}x`,
		"array":                      `[{"resourceType":"Patient"}]`,
		"string":                     `"Patient"`,
		"null":                       `null`,
		"empty":                      ``,
		"truncated":                  `{"resourceType":"Patient"`,
		"syntax":                     `{"resourceType" "Patient"}`,
		"too deep":                   strings.Repeat(`{"a":`, maxJSONDepth+1) + `1` + strings.Repeat(`}`, maxJSONDepth+1),
		"too deep in arrays":         `{"a":` + strings.Repeat(`[`, maxJSONDepth) + strings.Repeat(`]`, maxJSONDepth) + `}`,
		"byte order mark":            "\ufeff{}",
		"unterminated nested array":  `{"a":[1,2}`,
		"unterminated nested object": `{"a":{"b":1]}`,
	} {
		_, err := DecodeResource([]byte(body))
		var fe *Error
		if !errors.As(err, &fe) || fe.Status != http.StatusBadRequest {
			t.Errorf("%s: got %v", name, err)
		}
	}
	deepOK := strings.Repeat(`{"a":`, maxJSONDepth-1) + `1` + strings.Repeat(`}`, maxJSONDepth-1)
	if _, err := DecodeResource([]byte(deepOK)); err != nil {
		t.Errorf("depth %d refused: %v", maxJSONDepth-1, err)
	}
}
