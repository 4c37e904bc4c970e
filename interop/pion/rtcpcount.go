package main

import (
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
)

// rtcpCounter is a pass-through interceptor that counts the RTCP packets Pion writes and reads, by type (for the
// --verbose summary: does Pion send transport-cc feedback, does the server send PLI, NACK, ...). It is registered
// first, so it sees what the other interceptors (TWCC feedback, reports, NACK) write.
type rtcpCounter struct {
	interceptor.NoOp
	mu      sync.Mutex
	out, in map[string]int
}

func newRTCPCounter() *rtcpCounter {
	return &rtcpCounter{out: map[string]int{}, in: map[string]int{}}
}

type rtcpCounterFactory struct{ c *rtcpCounter }

func (f rtcpCounterFactory) NewInterceptor(string) (interceptor.Interceptor, error) { return f.c, nil }

func rtcpName(p rtcp.Packet) string {
	return strings.TrimPrefix(fmt.Sprintf("%T", p), "*rtcp.")
}

func (r *rtcpCounter) count(m map[string]int, pkts []rtcp.Packet) {
	r.mu.Lock()
	for _, p := range pkts {
		m[rtcpName(p)]++
	}
	r.mu.Unlock()
}

func (r *rtcpCounter) BindRTCPWriter(writer interceptor.RTCPWriter) interceptor.RTCPWriter {
	return interceptor.RTCPWriterFunc(func(pkts []rtcp.Packet, attrs interceptor.Attributes) (int, error) {
		r.count(r.out, pkts)
		return writer.Write(pkts, attrs)
	})
}

func (r *rtcpCounter) BindRTCPReader(reader interceptor.RTCPReader) interceptor.RTCPReader {
	return interceptor.RTCPReaderFunc(func(b []byte, a interceptor.Attributes) (int, interceptor.Attributes, error) {
		n, a, err := reader.Read(b, a)
		if err == nil {
			if pkts, perr := rtcp.Unmarshal(b[:n]); perr == nil {
				r.count(r.in, pkts)
			}
		}
		return n, a, err
	})
}

func (r *rtcpCounter) summary() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	f := func(m map[string]int) string {
		var s []string
		for k, v := range m {
			s = append(s, fmt.Sprintf("%s=%d", k, v))
		}
		sort.Strings(s)
		return strings.Join(s, " ")
	}
	return "RTCP sent: " + f(r.out) + "; RTCP received: " + f(r.in)
}
