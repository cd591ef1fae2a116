// Command peer is a Go producer and consumer of tsuru's gob job bodies, for
// queue_beanstalk's live gob tests. It speaks beanstalkd's protocol itself and
// uses the standard library only, so it builds offline:
//
//	GO111MODULE=off CGO_ENABLED=0 go build -o peer tests/gob/peer/main.go
//
// Usage:
//
//	peer decode                  hex bodies on stdin, one a line; each decoded, as JSON, on stdout
//	peer put ADDR TUBE           messages on stdin, as JSON lines; each put gob-encoded, its id on stdout
//	peer get ADDR TUBE COUNT     COUNT jobs reserved, decoded and deleted; each, as JSON, on stdout
//
// A message as JSON is {"action": ..., "args": [...]}; a body that does not
// decode is {"error": ...} (and get buries its job). Puts use tsuru's priority
// 1 and time-to-run 180 s. Failures go to stderr, with exit status 1.
package main

import (
	"bufio"
	"bytes"
	"encoding/gob"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// Message is tsuru's queue.Message.
type Message struct {
	Action string
	Args   []string
}

type result struct {
	Action string   `json:"action"`
	Args   []string `json:"args"`
	Error  string   `json:"error,omitempty"`
}

func decode(body []byte) result {
	var m Message
	if err := gob.NewDecoder(bytes.NewReader(body)).Decode(&m); err != nil {
		return result{Error: err.Error()}
	}
	if m.Args == nil {
		m.Args = []string{}
	}
	return result{Action: m.Action, Args: m.Args}
}

func encode(m Message) []byte {
	var body bytes.Buffer
	if err := gob.NewEncoder(&body).Encode(m); err != nil {
		fail(err)
	}
	return body.Bytes()
}

// conn is the smallest beanstalkd client: one command, one reply line.
type conn struct {
	c net.Conn
	r *bufio.Reader
}

func dial(addr string) *conn {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		fail(err)
	}
	return &conn{c, bufio.NewReader(c)}
}

// call sends a command (and a body, if any) and returns the reply's words.
func (c *conn) call(command string, body []byte) []string {
	request := []byte(command + "\r\n")
	if body != nil {
		request = append(append(request, body...), "\r\n"...)
	}
	if err := c.c.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		fail(err)
	}
	if _, err := c.c.Write(request); err != nil {
		fail(err)
	}
	line, err := c.r.ReadString('\n')
	if err != nil {
		fail(err)
	}
	return strings.Fields(line)
}

// expect sends a command and fails unless the reply starts with status.
func (c *conn) expect(status, command string, body []byte) []string {
	reply := c.call(command, body)
	if len(reply) == 0 || reply[0] != status {
		fail(fmt.Errorf("%q: got %q, want %s", command, reply, status))
	}
	return reply
}

// reserve returns the next job's id and body, waiting at most timeout seconds.
func (c *conn) reserve(timeout int) (string, []byte) {
	reply := c.expect("RESERVED", "reserve-with-timeout "+strconv.Itoa(timeout), nil)
	size, err := strconv.Atoi(reply[2])
	if err != nil {
		fail(err)
	}
	body := make([]byte, size+2)
	if _, err := io.ReadFull(c.r, body); err != nil {
		fail(err)
	}
	return reply[1], body[:size]
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "peer:", err)
	os.Exit(1)
}

func main() {
	if len(os.Args) < 2 {
		fail(errors.New("usage: peer decode | put ADDR TUBE | get ADDR TUBE COUNT"))
	}
	out := json.NewEncoder(os.Stdout)
	out.SetEscapeHTML(false)
	lines := bufio.NewScanner(os.Stdin)
	lines.Buffer(make([]byte, 1<<20), 1<<30)
	switch {
	case os.Args[1] == "decode" && len(os.Args) == 2:
		for lines.Scan() {
			body, err := hex.DecodeString(lines.Text())
			if err != nil {
				fail(err)
			}
			if err := out.Encode(decode(body)); err != nil {
				fail(err)
			}
		}
	case os.Args[1] == "put" && len(os.Args) == 4:
		c := dial(os.Args[2])
		c.expect("USING", "use "+os.Args[3], nil)
		for lines.Scan() {
			var m result
			if err := json.Unmarshal(lines.Bytes(), &m); err != nil {
				fail(err)
			}
			body := encode(Message{m.Action, m.Args})
			reply := c.expect("INSERTED", fmt.Sprintf("put 1 0 180 %d", len(body)), body)
			fmt.Println(reply[1])
		}
	case os.Args[1] == "get" && len(os.Args) == 5:
		count, err := strconv.Atoi(os.Args[4])
		if err != nil {
			fail(err)
		}
		c := dial(os.Args[2])
		c.expect("WATCHING", "watch "+os.Args[3], nil)
		c.expect("WATCHING", "ignore default", nil)
		for i := 0; i < count; i++ {
			id, body := c.reserve(10)
			got := decode(body)
			if got.Error != "" {
				c.expect("BURIED", "bury "+id+" 1", nil)
			} else {
				c.expect("DELETED", "delete "+id, nil)
			}
			if err := out.Encode(got); err != nil {
				fail(err)
			}
		}
	default:
		fail(errors.New("usage: peer decode | put ADDR TUBE | get ADDR TUBE COUNT"))
	}
	if err := lines.Err(); err != nil {
		fail(err)
	}
}
