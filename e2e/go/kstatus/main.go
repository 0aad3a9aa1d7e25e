// kstatus: what sigs.k8s.io/cli-utils/pkg/kstatus (the library behind Flux, Helm 4 --wait, kpt and
// Config Sync) computes for Kubernetes objects, so the operator's tests ask the real library rather
// than a re-implementation of its rules.
//
// Input on stdin: JSON objects, either one array, a List ({"items": [...]}, as `kubectl get -o json`
// prints), or a stream of objects (one per line or concatenated). Output on stdout: one JSON object
// per input object, one per line, in input order:
//
//	{"apiVersion": ..., "kind": ..., "namespace": ..., "name": ..., "status": "Current",
//	 "message": "...", "conditions": [...]}
//
// A malformed input or an object the library cannot read exits with status 1 and says which.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type result struct {
	APIVersion string             `json:"apiVersion"`
	Kind       string             `json:"kind"`
	Namespace  string             `json:"namespace,omitempty"`
	Name       string             `json:"name"`
	Status     string             `json:"status"`
	Message    string             `json:"message"`
	Conditions []status.Condition `json:"conditions"`
}

// objects flattens one decoded JSON value into the objects it holds.
func objects(v any) ([]map[string]any, error) {
	switch t := v.(type) {
	case []any:
		var out []map[string]any
		for i, item := range t {
			obj, ok := item.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("item %d of the array is not a JSON object", i)
			}
			out = append(out, obj)
		}
		return out, nil
	case map[string]any:
		if kind, _ := t["kind"].(string); strings.HasSuffix(kind, "List") && t["items"] != nil {
			return objects(t["items"])
		}
		return []map[string]any{t}, nil
	default:
		return nil, errors.New("input is neither a JSON object nor an array of objects")
	}
}

func run(in io.Reader, out io.Writer) error {
	dec := json.NewDecoder(bufio.NewReader(in))
	dec.UseNumber() // generation and observedGeneration stay integers for unstructured.NestedInt64
	enc := json.NewEncoder(out)
	count := 0
	for {
		var v any
		if err := dec.Decode(&v); err == io.EOF {
			break
		} else if err != nil {
			return fmt.Errorf("reading JSON from stdin: %w", err)
		}
		objs, err := objects(numbersToInt64(v))
		if err != nil {
			return err
		}
		for _, obj := range objs {
			count++
			u := &unstructured.Unstructured{Object: obj}
			res, err := status.Compute(u)
			if err != nil {
				return fmt.Errorf("object %d (%s %s): %w", count, u.GetKind(), u.GetName(), err)
			}
			conditions := res.Conditions
			if conditions == nil {
				conditions = []status.Condition{}
			}
			if err := enc.Encode(result{u.GetAPIVersion(), u.GetKind(), u.GetNamespace(), u.GetName(),
				res.Status.String(), res.Message, conditions}); err != nil {
				return err
			}
		}
	}
	if count == 0 {
		return errors.New("no object on stdin: pipe JSON objects in (e.g. `kubectl get omendb NAME -o json | kstatus`)")
	}
	return nil
}

// numbersToInt64 turns json.Number into int64 (or float64 when not integral), the types
// unstructured's accessors expect from a decoded object.
func numbersToInt64(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, x := range t {
			t[k] = numbersToInt64(x)
		}
		return t
	case []any:
		for i, x := range t {
			t[i] = numbersToInt64(x)
		}
		return t
	case json.Number:
		if i, err := t.Int64(); err == nil {
			return i
		}
		f, _ := t.Float64()
		return f
	default:
		return v
	}
}

func main() {
	if len(os.Args) > 1 {
		fmt.Fprintln(os.Stderr, "usage: kstatus < objects.json (no arguments; see the comment in main.go)")
		os.Exit(2)
	}
	if err := run(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "kstatus:", err)
		os.Exit(1)
	}
}
