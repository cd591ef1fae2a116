// Command generate writes the gob test vectors of queue_beanstalk's GobCodec,
// tests/gob/vectors.jsonl: one JSON object a line, each a job body as Go's
// encoding/gob writes it with a fresh Encoder (as tsuru's queue did for every
// job), and what Go's decoder makes of that body when it decodes it into
// tsuru's Message: {"action", "args"} or {"error"}.
//
// It uses the standard library only. To regenerate the vectors (Debian:
// apt-get install golang-go), from the repository's root:
//
//	GO111MODULE=off CGO_ENABLED=0 GOCACHE=$(mktemp -d) go run tests/gob/generate/main.go > tests/gob/vectors.jsonl
package main

import (
	"bytes"
	"encoding/gob"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"strings"
	"time"
)

// Message is tsuru's queue.Message, as its producers and consumers declared it.
type Message struct {
	Action string
	Args   []string
}

// Job is the same struct under another name.
type Job struct {
	Action string
	Args   []string
}

// Reordered has the fields the other way round.
type Reordered struct {
	Args   []string
	Action string
}

// Verb and Words are named types over the fields' types: gob sends the same.
type (
	Verb  string
	Words []string
)

type Named struct {
	Action Verb
	Args   Words
}

type Pointers struct {
	Action *string
	Args   *[]string
}

type Point struct{ X, Y int }

type Address struct {
	Street string
	Lines  []string
	Where  Point
}

type Person struct {
	Name    string
	Age     int
	Address Address
}

// Node is a recursive type: a linked list.
type Node struct {
	Value int
	Next  *Node
}

// NestedInterface has an interface holding a map of interfaces, and the types of the
// values in it are defined inside the outer interface's value. Go's decoder cannot
// skip such a field (it skips the outer value by its byte count, which does
// not cover the inner values), so it cannot read this into Message either.
type NestedInterface struct {
	Action string
	Nested interface{}
	Args   []string
}

type Inner struct {
	Labels map[string]string
	Points []Point
}

// Extended is a Message with every kind of field a Go user may have added.
type Extended struct {
	ID       int64
	Priority uint32
	Weight   float64
	Ratio    float32
	Done     bool
	Small    int8
	Action   string
	C        complex128
	Raw      []byte
	Fixed    [3]int
	Matrix   [][]float64
	Counts   map[string]int
	Tags     map[string][]string
	People   map[int]Person
	Owner    Person
	Ptr      *Person
	List     *Node
	When     time.Time   // a GobEncoder
	Link     *url.URL    // a BinaryMarshaler
	IP       net.IP      // a TextMarshaler
	Big      *big.Int    // a GobEncoder
	Any      interface{} // a struct, defined inside the interface
	Any2     interface{} // a struct whose fields need three more definitions
	Any3     interface{} // a slice
	None     interface{} // nil
	Points   []Point
	Args     []string
	Trailer  string
	hidden   string // unexported: never sent
}

// Embedded has its Action in an embedded struct, which gob sends as a field
// named Base: tsuru's Message has no such field, so Action stays empty.
type Base struct{ Action string }

type Embedded struct {
	Base
	Args []string
}

type OtherNames struct {
	Verb   string
	Params []string
}

type ActionInt struct {
	Action int
	Args   []string
}

type ArgsInts struct {
	Action string
	Args   []int
}

type ArgsArray struct {
	Action string
	Args   [2]string
}

type ArgsString struct {
	Action string
	Args   string
}

type ArgsNested struct {
	Action string
	Args   [][]string
}

type ActionBytes struct {
	Action []byte
	Args   []string
}

type vector struct {
	Name   string   `json:"name"`
	Body   string   `json:"body"`
	Action *string  `json:"action,omitempty"`
	Args   []string `json:"args,omitempty"`
	Error  string   `json:"error,omitempty"`
}

func encode(values ...interface{}) []byte {
	var body bytes.Buffer
	encoder := gob.NewEncoder(&body)
	for _, value := range values {
		if err := encoder.Encode(value); err != nil {
			panic(err)
		}
	}
	return body.Bytes()
}

func emit(out *json.Encoder, name string, body []byte) {
	v := vector{Name: name, Body: hex.EncodeToString(body)}
	var m Message
	if err := gob.NewDecoder(bytes.NewReader(body)).Decode(&m); err != nil {
		v.Error = err.Error()
	} else {
		v.Action = &m.Action
		v.Args = m.Args
	}
	if err := out.Encode(v); err != nil {
		panic(err)
	}
}

func numbered(n int, format string) []string {
	args := make([]string, n)
	for i := range args {
		args[i] = fmt.Sprintf(format, i)
	}
	return args
}

// largest returns the largest body of one Message with an argument of 'a's
// that fits beanstalkd's default max-job-size, 65535 bytes.
func largest() []byte {
	var body []byte
	for n := 65400; ; n++ {
		next := encode(Message{"x", []string{strings.Repeat("a", n)}})
		if len(next) > 65535 {
			return body
		}
		body = next
	}
}

func main() {
	gob.Register(Point{})
	gob.Register(map[string]interface{}{})
	gob.Register(Inner{})
	gob.Register([]int{})

	action := "regenerate-apprc"
	args := []string{"myapp"}
	link, _ := url.Parse("https://example.com/path?q=1")
	list := &Node{1, &Node{2, &Node{3, nil}}}
	deep, deeper := &Node{0, nil}, &Node{0, nil}
	for i := 1; i < 150; i++ {
		if i < 40 {
			deep = &Node{i, deep}
		}
		deeper = &Node{i, deeper}
	}
	owner := Person{"Ana", 41, Address{"Rua A", []string{"1", "2"}, Point{3, -4}}}
	extended := Extended{
		ID: -1 << 40, Priority: 1 << 31, Weight: 17.5, Ratio: -0.25, Done: true, Small: -128,
		Action: "x", C: complex(1.5, -2),
		Raw: []byte{0, 1, 255}, Fixed: [3]int{0, -1, 1 << 62},
		Matrix: [][]float64{{1, 2}, {}, {3}},
		Counts: map[string]int{"a": 1, "b": 0, "c": -7},
		Tags:   map[string][]string{"t": {"u", "v"}, "empty": nil},
		People: map[int]Person{7: owner, -7: {}},
		Owner:  owner, Ptr: &owner, List: list,
		When: time.Date(2014, 3, 1, 12, 30, 0, 500, time.UTC),
		Link: link, IP: net.ParseIP("192.0.2.1"), Big: new(big.Int).Lsh(big.NewInt(1), 100),
		Any: Point{22, 33}, Any2: Inner{map[string]string{"k": "v"}, []Point{{1, 2}}}, Any3: []int{1, -2},
		Points: []Point{{}, {1, 1}},
		Args:   []string{"a", "b"}, Trailer: "end", hidden: "never sent",
	}

	out := json.NewEncoder(os.Stdout)
	out.SetEscapeHTML(false)

	// What tsuru's producers wrote; GobCodec.encode writes the same bytes.
	emit(out, "message", encode(Message{action, args}))
	emit(out, "no-args-nil", encode(Message{Action: "x"}))
	emit(out, "no-args-empty", encode(Message{Action: "x", Args: []string{}}))
	emit(out, "empty-strings", encode(Message{"x", []string{"", "", "a", ""}}))
	emit(out, "utf8", encode(Message{"café ☕", []string{"ü", "日本語", "🎉", "\x00nul", "line\nbreak", "\u2028"}}))
	emit(out, "many-args", encode(Message{"many", numbered(1000, "arg-%d")}))
	emit(out, "long-strings", encode(Message{strings.Repeat("é", 200), []string{strings.Repeat("b", 127), strings.Repeat("c", 128), strings.Repeat("d", 256)}}))
	emit(out, "max-job-size", largest())

	// The struct as other Go programs may declare it.
	emit(out, "other-name", encode(Job{action, args}))
	emit(out, "reordered", encode(Reordered{args, action}))
	emit(out, "reordered-no-args", encode(Reordered{Action: action}))
	emit(out, "named-types", encode(Named{Verb(action), Words(args)}))
	emit(out, "pointers", encode(Pointers{&action, &args}))
	emit(out, "extended", encode(extended))
	emit(out, "extended-zero-extras", encode(Extended{Action: "x", Args: []string{"a"}}))
	emit(out, "deep-list", encode(struct {
		Action string
		List   *Node
		Args   []string
	}{"x", deep, []string{"a"}}))

	// What Go decodes but leaves Action empty: GobCodec refuses it.
	emit(out, "zero", encode(Message{}))
	emit(out, "no-action", encode(Message{Args: []string{"a"}}))
	emit(out, "embedded-action", encode(Embedded{Base{"x"}, []string{"a"}}))

	// What Go's decoder refuses.
	emit(out, "other-field-names", encode(OtherNames{"x", []string{"a"}}))
	emit(out, "action-int", encode(ActionInt{1, []string{"a"}}))
	emit(out, "action-bytes", encode(ActionBytes{[]byte("x"), []string{"a"}}))
	emit(out, "args-ints", encode(ArgsInts{"x", []int{1}}))
	emit(out, "args-array", encode(ArgsArray{"x", [2]string{"a", "b"}}))
	emit(out, "args-string", encode(ArgsString{"x", "a"}))
	emit(out, "args-nested", encode(ArgsNested{"x", [][]string{{"a"}}}))
	emit(out, "top-level-string", encode("x"))
	emit(out, "top-level-slice", encode([]string{"x", "a"}))
	emit(out, "top-level-map", encode(map[string]string{"Action": "x"}))
	emit(out, "top-level-time", encode(time.Date(2014, 3, 1, 0, 0, 0, 0, time.UTC)))
	emit(out, "nested-interface", encode(NestedInterface{"x", map[string]interface{}{"ints": []int{1, 2}}, []string{"a"}}))
	emit(out, "truncated", encode(Message{action, args})[:60])

	// What Go's decoder reads and GobCodec refuses, on purpose: Go reads the
	// first value and ignores the rest; its strings may be any bytes, while
	// GobCodec's are UTF-8.
	emit(out, "two-values", encode(Message{"x", nil}, Message{"y", nil}))
	emit(out, "invalid-utf8", encode(Message{"x", []string{"\xff"}}))
	// GobCodec reads values nested at most 100 deep: here 150.
	emit(out, "deeper-than-max-depth", encode(struct {
		Action string
		List   *Node
	}{"x", deeper}))
}
