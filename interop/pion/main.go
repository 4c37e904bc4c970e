// Pion client of the interop matrix (interop/README.md): a typical Pion (pion/webrtc v3) app joins one Courier room,
// publishes Opus + VP8, receives every other participant, and writes the contract's JSON report. It exists so the
// matrix covers Go/Pion, the stack many native SFU clients and bots are built on, with Pion's own defaults (default
// codecs and interceptors: NACK, RTCP reports, TWCC feedback). Pion has no encoder: video is the looped IVF clip
// media-tests/data/vp8-320x180-30fps.ivf (embedded at build time, restarted at its keyframe on PLI/FIR), audio is the
// 3-byte Opus silence frame every 20 ms. Built offline from Debian's packages by build.sh (GOPATH mode).
package main

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/ice/v2"
	"github.com/pion/interceptor"
	"github.com/pion/logging"
	"github.com/pion/rtcp"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v3"
	"github.com/pion/webrtc/v3/pkg/media"
	"github.com/pion/webrtc/v3/pkg/media/ivfreader"
)

// Set by build.sh from the Debian package's version.
var pionVersion = "3.x"

//go:embed vp8.ivf
var embeddedIVF []byte

// opusSilence is one 20 ms Opus frame (TOC 0xf8: CELT fullband 20 ms, mono, one frame) that decodes to silence.
var opusSilence = []byte{0xf8, 0xff, 0xfe}

const audioInterval = 20 * time.Millisecond

func nowMs() int64 { return time.Now().UnixMilli() }

// ---- report ------------------------------------------------------------------------------------------------------

type sentTrack struct {
	Mid     string `json:"mid"`
	Kind    string `json:"kind"`
	TrackID string `json:"track_id"`
	Units   string `json:"units"`
	Window  int64  `json:"window"`
	Total   int64  `json:"total"`
}

type receivedTrack struct {
	TrackID       string `json:"track_id"`
	ParticipantID string `json:"participant_id"`
	Kind          string `json:"kind"`
	Units         string `json:"units"`
	FirstMs       *int64 `json:"first_ms"`
	Window        int64  `json:"window"`
	Total         int64  `json:"total"`
	mid           string
}

type report struct {
	Stack         string           `json:"stack"`
	StackVersion  string           `json:"stack_version"`
	ParticipantID string           `json:"participant_id"`
	JoinedMs      *int64           `json:"joined_ms"`
	ConnectedMs   *int64           `json:"connected_ms"`
	States        [][2]interface{} `json:"states"`
	ClosedEarly   *string          `json:"closed_early"`
	Sent          []*sentTrack     `json:"sent"`
	Received      []*receivedTrack `json:"received"`
	Errors        []string         `json:"errors"`
	// Not in the contract: Pion's own warnings (e.g. "Incoming unhandled RTP ssrc"), deduplicated, with counts.
	PionWarnings map[string]int `json:"pion_warnings"`
}

// ---- client ------------------------------------------------------------------------------------------------------

type subInfo struct{ trackID, participantID, kind string }

type client struct {
	url, token               string
	duration                 time.Duration
	windowStart, windowEnd   int64
	reportPath               string
	ivf                      []byte
	verbose                  bool
	mu                       sync.Mutex
	rep                      report
	ws                       *websocket.Conn
	wsMu                     sync.Mutex
	pc                       *webrtc.PeerConnection
	selfID                   string
	nextOfferID              int64
	outstanding              int64 // id of our offer awaiting its answer, 0 if none
	offerSent                bool  // candidates are held back until the first offer is on the wire
	pendingCands             []webrtc.ICECandidateInit
	firstMid                 string
	subs                     map[string]subInfo // mid -> subscription (from `subscribed`)
	sentByMid                map[string]*sentTrack
	mediaOnce                sync.Once
	done                     chan struct{} // closed when the client stops (media loops end)
	fatal                    chan string   // first early end / failure
	keyframe                 chan struct{}
	rtcpCount                *rtcpCounter
	audioTrack, videoTrack   *webrtc.TrackLocalStaticSample
	audioSender, videoSender *webrtc.RTPSender
}

func (c *client) logf(format string, args ...interface{}) {
	if c.verbose {
		fmt.Fprintf(os.Stderr, "%s pion-client: %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
	}
}

// logSDP prints an SDP in --verbose mode (with PION_CLIENT_SDP=1 in the environment).
func (c *client) logSDP(what, sdp string) {
	if c.verbose && os.Getenv("PION_CLIENT_SDP") == "1" {
		c.logf("%s:\n%s", what, sdp)
	}
}

func (c *client) addError(format string, args ...interface{}) {
	msg := fmt.Sprintf(format, args...)
	fmt.Fprintf(os.Stderr, "pion-client error: %s\n", msg)
	c.mu.Lock()
	c.rep.Errors = append(c.rep.Errors, msg)
	c.mu.Unlock()
}

// fail ends the session early (the first reason wins).
func (c *client) fail(reason string) {
	select {
	case c.fatal <- reason:
	default:
	}
}

func (c *client) send(msg map[string]interface{}) error {
	b, err := json.Marshal(msg)
	if err != nil {
		return err
	}
	c.wsMu.Lock()
	defer c.wsMu.Unlock()
	_ = c.ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
	return c.ws.WriteMessage(websocket.TextMessage, b)
}

func (c *client) inWindow(ms int64) bool { return ms >= c.windowStart && ms < c.windowEnd }

// ---- Pion logging: stderr, warnings counted into the report --------------------------------------------------------

type warnWriter struct{ c *client }

func (w warnWriter) Write(p []byte) (int, error) {
	os.Stderr.Write(p)
	line := strings.TrimSpace(string(p))
	// "pc WARNING: 2024/01/01 00:00:00 Incoming unhandled RTP ssrc(123), ..." -> keep the text after the timestamp
	key := line
	if i := strings.Index(line, ": "); i >= 0 {
		rest := line[i+2:]
		if f := strings.SplitN(rest, " ", 3); len(f) == 3 {
			rest = f[2]
		}
		key = line[:i] + ": " + rest
	}
	select {
	case <-w.c.done:
		return len(p), nil // closing: Pion's "Failed to accept RTP stream is already closed" and the like
	default:
	}
	w.c.mu.Lock()
	if len(w.c.rep.PionWarnings) < 50 || w.c.rep.PionWarnings[key] > 0 {
		w.c.rep.PionWarnings[key]++
	}
	w.c.mu.Unlock()
	return len(p), nil
}

// ---- peer connection ---------------------------------------------------------------------------------------------

func (c *client) newPeerConnection() error {
	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		return err
	}
	ir := &interceptor.Registry{}
	c.rtcpCount = newRTCPCounter()
	ir.Add(rtcpCounterFactory{c.rtcpCount})
	// NACK generator/responder, sender/receiver reports, TWCC feedback (transport-cc header extension + generator).
	if err := webrtc.RegisterDefaultInterceptors(m, ir); err != nil {
		return err
	}
	se := webrtc.SettingEngine{}
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	lf := logging.NewDefaultLoggerFactory()
	lf.DefaultLogLevel = logging.LogLevelWarn
	lf.Writer = warnWriter{c}
	se.LoggerFactory = lf

	api := webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(ir), webrtc.WithSettingEngine(se))
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return err
	}
	c.pc = pc

	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		t := nowMs()
		c.logf("peer connection %s", s)
		c.mu.Lock()
		c.rep.States = append(c.rep.States, [2]interface{}{t, s.String()})
		if s == webrtc.PeerConnectionStateConnected && c.rep.ConnectedMs == nil {
			c.rep.ConnectedMs = &t
		}
		c.mu.Unlock()
		switch s {
		case webrtc.PeerConnectionStateConnected:
			c.mediaOnce.Do(func() { go c.sendVideo(); go c.sendAudio() })
		case webrtc.PeerConnectionStateFailed:
			c.fail("peer connection failed")
		case webrtc.PeerConnectionStateClosed:
			c.fail("peer connection closed")
		}
	})
	pc.OnICEConnectionStateChange(func(s webrtc.ICEConnectionState) {
		// Pion 3.1 never reports the peer connection "connecting" (it needs ICE checking and DTLS connecting at
		// once): the ICE states, prefixed "ice-", show when checks started.
		t := nowMs()
		c.logf("ICE %s", s)
		c.mu.Lock()
		c.rep.States = append(c.rep.States, [2]interface{}{t, "ice-" + s.String()})
		c.mu.Unlock()
	})
	pc.OnICECandidate(func(cand *webrtc.ICECandidate) {
		if cand == nil {
			return // end of candidates: nothing to say (an empty candidate would be accepted too)
		}
		init := cand.ToJSON()
		c.mu.Lock()
		if !c.offerSent {
			c.pendingCands = append(c.pendingCands, init)
			c.mu.Unlock()
			return
		}
		mid := c.firstMid
		c.mu.Unlock()
		c.sendCandidate(init, mid)
	})
	pc.OnTrack(c.onTrack)

	c.audioTrack, err = webrtc.NewTrackLocalStaticSample(
		webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, "audio", "pion")
	if err != nil {
		return err
	}
	c.videoTrack, err = webrtc.NewTrackLocalStaticSample(
		webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, "video", "pion")
	if err != nil {
		return err
	}
	sendonly := webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly}
	at, err := pc.AddTransceiverFromTrack(c.audioTrack, sendonly)
	if err != nil {
		return err
	}
	vt, err := pc.AddTransceiverFromTrack(c.videoTrack, sendonly)
	if err != nil {
		return err
	}
	c.audioSender, c.videoSender = at.Sender(), vt.Sender()
	// RTCP must be read for the interceptors (NACK responder, reports) to see it; PLI/FIR ask for a keyframe.
	go c.readRTCP(c.audioSender, false)
	go c.readRTCP(c.videoSender, true)
	return nil
}

func (c *client) sendCandidate(init webrtc.ICECandidateInit, fallbackMid string) {
	mid := fallbackMid
	if init.SDPMid != nil && *init.SDPMid != "" {
		mid = *init.SDPMid // Pion leaves it empty (its candidates belong to the bundle): use the first mid
	}
	c.logf("candidate %s (mid %s)", init.Candidate, mid)
	if err := c.send(map[string]interface{}{"type": "candidate", "candidate": init.Candidate, "sdp_mid": mid}); err != nil {
		c.addError("sending candidate: %v", err)
	}
}

func (c *client) readRTCP(s *webrtc.RTPSender, video bool) {
	for {
		pkts, _, err := s.ReadRTCP()
		if err != nil {
			return
		}
		if !video {
			continue
		}
		for _, p := range pkts {
			switch p.(type) {
			case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
				select {
				case c.keyframe <- struct{}{}:
				default:
				}
			}
		}
	}
}

// publish sends our first offer: one sendonly Opus and one sendonly VP8 m-section.
func (c *client) publish() error {
	offer, err := c.pc.CreateOffer(nil)
	if err != nil {
		return err
	}
	if err := c.pc.SetLocalDescription(offer); err != nil {
		return err
	}
	var tracks []map[string]interface{}
	c.mu.Lock()
	for _, t := range c.pc.GetTransceivers() {
		if t.Sender() == nil || t.Sender().Track() == nil {
			continue
		}
		kind, source, units := "audio", "microphone", "packets"
		if t.Kind() == webrtc.RTPCodecTypeVideo {
			kind, source, units = "video", "camera", "frames"
		}
		if c.firstMid == "" {
			c.firstMid = t.Mid()
		}
		tracks = append(tracks, map[string]interface{}{"mid": t.Mid(), "source": source, "name": "pion-" + kind})
		st := &sentTrack{Mid: t.Mid(), Kind: kind, Units: units}
		c.sentByMid[t.Mid()] = st
		c.rep.Sent = append(c.rep.Sent, st)
	}
	c.nextOfferID++
	id := c.nextOfferID
	c.outstanding = id
	c.mu.Unlock()
	c.logf("sending offer %d", id)
	c.logSDP(fmt.Sprintf("our offer %d", id), c.pc.LocalDescription().SDP)
	if err := c.send(map[string]interface{}{"type": "offer", "id": id, "sdp": c.pc.LocalDescription().SDP, "tracks": tracks}); err != nil {
		return err
	}
	c.mu.Lock()
	c.offerSent = true
	pending := c.pendingCands
	c.pendingCands = nil
	mid := c.firstMid
	c.mu.Unlock()
	for _, init := range pending {
		c.sendCandidate(init, mid)
	}
	return nil
}

func (c *client) onTrack(track *webrtc.TrackRemote, receiver *webrtc.RTPReceiver) {
	mid := ""
	for _, t := range c.pc.GetTransceivers() {
		if t.Receiver() == receiver {
			mid = t.Mid()
			break
		}
	}
	kind := track.Kind().String()
	c.mu.Lock()
	sub, ok := c.subs[mid]
	var rt *receivedTrack
	// A track the server re-offers on the same mid keeps its counters.
	for _, r := range c.rep.Received {
		if r.mid == mid && r.TrackID == sub.trackID {
			rt = r
		}
	}
	if rt == nil {
		units := "packets"
		if kind == "video" {
			units = "frames"
		}
		rt = &receivedTrack{TrackID: sub.trackID, ParticipantID: sub.participantID, Kind: kind, Units: units, mid: mid}
		c.rep.Received = append(c.rep.Received, rt)
	}
	c.mu.Unlock()
	if !ok {
		c.addError("track on mid %q (ssrc %d, %s) has no `subscribed`", mid, track.SSRC(), kind)
	}
	c.logf("OnTrack mid=%s kind=%s ssrc=%d codec=%s track_id=%s", mid, kind, track.SSRC(), track.Codec().MimeType, sub.trackID)
	video := kind == "video"
	var withTWCC, pkts int64
	defer func() {
		c.logf("track %s: %d of %d RTP packets carry a transport-cc sequence number", sub.trackID, withTWCC, pkts)
	}()
	twccID := 0
	for _, e := range receiver.GetParameters().HeaderExtensions {
		if e.URI == sdp.TransportCCURI {
			twccID = e.ID
		}
	}
	for {
		pkt, _, err := track.ReadRTP()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				c.logf("track %s ended: %v", sub.trackID, err)
			}
			return
		}
		pkts++
		if twccID != 0 && pkt.GetExtension(uint8(twccID)) != nil {
			withTWCC++
		}
		if video && !pkt.Marker {
			continue
		}
		t := nowMs()
		c.mu.Lock()
		if rt.FirstMs == nil {
			rt.FirstMs = &t
		}
		rt.Total++
		if c.inWindow(t) {
			rt.Window++
		}
		c.mu.Unlock()
	}
}

// ---- media -------------------------------------------------------------------------------------------------------

func (c *client) countSent(mid string) {
	t := nowMs()
	c.mu.Lock()
	if st := c.sentByMid[mid]; st != nil {
		st.Total++
		if c.inWindow(t) {
			st.Window++
		}
	}
	c.mu.Unlock()
}

func (c *client) midOf(s *webrtc.RTPSender) string {
	for _, t := range c.pc.GetTransceivers() {
		if t.Sender() == s {
			return t.Mid()
		}
	}
	return ""
}

// pace calls step at start+n*interval for n = 1, 2, ... until done is closed.
func (c *client) pace(interval time.Duration, step func()) {
	next := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	for {
		next = next.Add(interval)
		if d := time.Until(next); d > 0 {
			timer.Reset(d)
			select {
			case <-c.done:
				return
			case <-timer.C:
			}
		} else {
			select {
			case <-c.done:
				return
			default:
			}
		}
		step()
	}
}

func (c *client) sendAudio() {
	mid := c.midOf(c.audioSender)
	c.pace(audioInterval, func() {
		if err := c.audioTrack.WriteSample(media.Sample{Data: opusSilence, Duration: audioInterval}); err != nil {
			c.addError("audio WriteSample: %v", err)
			return
		}
		c.countSent(mid)
	})
}

func (c *client) sendVideo() {
	mid := c.midOf(c.videoSender)
	reader, header, err := ivfreader.NewWith(bytes.NewReader(c.ivf))
	if err != nil {
		c.addError("IVF: %v", err)
		return
	}
	interval := time.Second / 30
	if header.TimebaseDenominator > 0 && header.TimebaseNumerator > 0 {
		interval = time.Duration(int64(time.Second) * int64(header.TimebaseNumerator) / int64(header.TimebaseDenominator))
	}
	lastKeyframe := time.Time{}
	c.pace(interval, func() {
		restart := false
		select {
		case <-c.keyframe:
			// Only frame 0 is a keyframe: restart the clip (at most every 500 ms, like an encoder would).
			if time.Since(lastKeyframe) >= 500*time.Millisecond {
				restart = true
			}
		default:
		}
		frame, _, err := reader.ParseNextFrame()
		if errors.Is(err, io.EOF) || restart {
			reader, _, err = ivfreader.NewWith(bytes.NewReader(c.ivf))
			if err == nil {
				frame, _, err = reader.ParseNextFrame()
			}
			lastKeyframe = time.Now()
		}
		if err != nil {
			c.addError("IVF: %v", err)
			return
		}
		if err := c.videoTrack.WriteSample(media.Sample{Data: frame, Duration: interval}); err != nil {
			c.addError("video WriteSample: %v", err)
			return
		}
		c.countSent(mid)
	})
}

// ---- signaling ---------------------------------------------------------------------------------------------------

type inMsg struct {
	Type          string          `json:"type"`
	ID            int64           `json:"id"`
	SDP           string          `json:"sdp"`
	TrackID       string          `json:"track_id"`
	ParticipantID string          `json:"participant_id"`
	Kind          string          `json:"kind"`
	Mid           string          `json:"mid"`
	Reason        string          `json:"reason"`
	Code          string          `json:"code"`
	Message       string          `json:"message"`
	ReqType       string          `json:"req_type"`
	Participant   json.RawMessage `json:"participant"`
	Track         json.RawMessage `json:"track"`
}

func (c *client) handle(m *inMsg, raw []byte, joined chan<- struct{}) {
	switch m.Type {
	case "joined":
		var p struct {
			ID string `json:"id"`
		}
		_ = json.Unmarshal(m.Participant, &p)
		t := nowMs()
		c.mu.Lock()
		c.selfID = p.ID
		c.rep.ParticipantID = p.ID
		c.rep.JoinedMs = &t
		c.mu.Unlock()
		c.logf("joined as %s", p.ID)
		// Publish from the reader goroutine, before the next server message is handled: a server offer that
		// follows `joined` (the room already has tracks) then finds our offer outstanding and is ignored (glare).
		if err := c.publish(); err != nil {
			c.addError("publishing: %v", err)
			c.fail("publishing failed")
			return
		}
		close(joined)
	case "answer":
		c.mu.Lock()
		ours := m.ID == c.outstanding && c.outstanding != 0
		c.mu.Unlock()
		if !ours {
			c.logf("ignoring answer %d (not our outstanding offer)", m.ID)
			return
		}
		c.logSDP(fmt.Sprintf("server answer %d", m.ID), m.SDP)
		err := c.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: m.SDP})
		c.mu.Lock()
		c.outstanding = 0
		c.mu.Unlock()
		if err != nil {
			c.addError("applying answer %d: %v", m.ID, err)
			c.fail("answer rejected: " + err.Error())
			return
		}
		c.logf("answer %d applied", m.ID)
	case "offer":
		if c.isLeaving() {
			c.logf("leaving: ignoring server offer %d", m.ID)
			return
		}
		c.mu.Lock()
		busy := c.outstanding != 0
		c.mu.Unlock()
		if busy {
			c.logf("glare: ignoring server offer %d while our offer is outstanding", m.ID)
			return
		}
		c.logSDP(fmt.Sprintf("server offer %d", m.ID), m.SDP)
		if err := c.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: m.SDP}); err != nil {
			c.addError("applying server offer %d: %v", m.ID, err)
			return
		}
		answer, err := c.pc.CreateAnswer(nil)
		if err == nil {
			err = c.pc.SetLocalDescription(answer)
		}
		if err != nil {
			c.addError("answering server offer %d: %v", m.ID, err)
			return
		}
		c.logf("answering server offer %d", m.ID)
		c.logSDP(fmt.Sprintf("our answer %d", m.ID), c.pc.LocalDescription().SDP)
		if err := c.send(map[string]interface{}{"type": "answer", "id": m.ID, "sdp": c.pc.LocalDescription().SDP}); err != nil && !c.isLeaving() {
			c.addError("sending answer: %v", err)
		}
	case "subscribed":
		c.mu.Lock()
		c.subs[m.Mid] = subInfo{trackID: m.TrackID, participantID: m.ParticipantID, kind: m.Kind}
		c.mu.Unlock()
		c.logf("subscribed %s (%s of %s) on mid %s", m.TrackID, m.Kind, m.ParticipantID, m.Mid)
	case "track_published":
		var t struct {
			ID  string `json:"id"`
			Mid string `json:"mid"`
		}
		_ = json.Unmarshal(m.Track, &t)
		c.mu.Lock()
		if m.ParticipantID == c.selfID {
			if st := c.sentByMid[t.Mid]; st != nil {
				st.TrackID = t.ID
			}
		}
		c.mu.Unlock()
		c.logf("track_published %s by %s (mid %q)", t.ID, m.ParticipantID, t.Mid)
	case "error":
		c.addError("server error %s (%s): %s", m.Code, m.ReqType, m.Message)
	case "leave":
		c.fail("leave: " + m.Reason)
	case "participant_left":
		c.mu.Lock()
		self := m.ParticipantID == c.selfID
		c.mu.Unlock()
		if self {
			c.fail("participant_left: " + m.Reason)
		}
		c.logf("participant_left %s (%s)", m.ParticipantID, m.Reason)
	case "pong", "participant_joined", "track_unpublished", "unsubscribed", "track_muted", "active_speakers",
		"stream_state", "set_layers", "participant_updated", "room_updated", "permissions_changed":
		if c.verbose && m.Type != "pong" && m.Type != "active_speakers" {
			c.logf("<- %s", raw)
		}
	default:
		c.logf("<- (unhandled) %s", raw)
	}
}

// isLeaving: the session's end has begun (c.done is closed); the server may close the socket at any moment.
func (c *client) isLeaving() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

func (c *client) readLoop(joined chan struct{}, leaving *bool, closed chan<- struct{}) {
	defer close(closed)
	for {
		_, data, err := c.ws.ReadMessage()
		if err != nil {
			c.mu.Lock()
			l := *leaving
			c.mu.Unlock()
			if l {
				return
			}
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				c.fail(fmt.Sprintf("websocket closed by server: %d %s", ce.Code, ce.Text))
			} else {
				c.fail("websocket: " + err.Error())
			}
			return
		}
		var m inMsg
		if err := json.Unmarshal(data, &m); err != nil {
			c.addError("bad server message: %v", err)
			continue
		}
		c.handle(&m, data, joined)
	}
}

// run returns the early-end reason, or "" when the session lasted --duration.
func (c *client) run() string {
	dialer := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	ws, _, err := dialer.Dial(c.url, nil)
	if err != nil {
		c.addError("websocket connect: %v", err)
		return "websocket connect failed: " + err.Error()
	}
	c.ws = ws
	if err := c.newPeerConnection(); err != nil {
		c.addError("peer connection: %v", err)
		return "peer connection setup failed"
	}
	joined := make(chan struct{})
	closed := make(chan struct{})
	leaving := false
	go c.readLoop(joined, &leaving, closed)
	if err := c.send(map[string]interface{}{"type": "join", "v": 1, "token": c.token, "auto_subscribe": true}); err != nil {
		c.addError("sending join: %v", err)
		return "sending join failed"
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	select {
	case <-joined:
	case r := <-c.fatal:
		return r
	case <-time.After(10 * time.Second):
		c.addError("no `joined` within 10 s")
		return "no joined within 10 s"
	case s := <-sigs:
		return "signal " + s.String()
	}
	end := time.After(c.duration)
	ping := time.NewTicker(10 * time.Second)
	defer ping.Stop()
	reason := ""
loop:
	for {
		select {
		case <-end:
			break loop
		case r := <-c.fatal:
			reason = r
			break loop
		case s := <-sigs:
			reason = "signal " + s.String()
			break loop
		case <-ping.C:
			_ = c.send(map[string]interface{}{"type": "ping", "ts": nowMs()})
		}
	}
	c.mu.Lock()
	leaving = true
	c.mu.Unlock()
	close(c.done)
	if reason == "" {
		_ = c.send(map[string]interface{}{"type": "leave"})
		select { // the server closes with 1000
		case <-closed:
		case <-time.After(2 * time.Second):
		}
	}
	c.wsMu.Lock()
	_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	c.wsMu.Unlock()
	_ = c.ws.Close()
	return reason
}

func (c *client) writeReport() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	sort.SliceStable(c.rep.Received, func(i, j int) bool { return c.rep.Received[i].TrackID < c.rep.Received[j].TrackID })
	b, err := json.MarshalIndent(&c.rep, "", "  ")
	if err != nil {
		return err
	}
	tmp := c.reportPath + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, c.reportPath)
}

func main() {
	url := flag.String("url", "", "signaling URL, ws://HOST:PORT/rtc")
	token := flag.String("token", "", "join token")
	duration := flag.Float64("duration", 20, "seconds to stay after join")
	ws := flag.Int64("window-start", 0, "counting window start, unix ms")
	we := flag.Int64("window-end", 0, "counting window end, unix ms")
	reportPath := flag.String("report", "", "where to write the JSON report")
	ivfPath := flag.String("ivf", "", "VP8 IVF file to loop (default: the clip embedded at build time)")
	verbose := flag.Bool("verbose", false, "log signaling and media events to stderr")
	flag.Parse()
	if *url == "" || *token == "" || *reportPath == "" {
		fmt.Fprintln(os.Stderr, "usage: pion-client --url ws://… --token T --duration S --window-start MS --window-end MS --report PATH [--verbose]")
		os.Exit(2)
	}
	c := &client{
		url: *url, token: *token, duration: time.Duration(*duration * float64(time.Second)),
		windowStart: *ws, windowEnd: *we, reportPath: *reportPath, ivf: embeddedIVF, verbose: *verbose,
		subs: map[string]subInfo{}, sentByMid: map[string]*sentTrack{}, nextOfferID: 0,
		done: make(chan struct{}), fatal: make(chan string, 1), keyframe: make(chan struct{}, 1),
	}
	c.rep = report{Stack: "pion", StackVersion: "pion/webrtc " + pionVersion, States: [][2]interface{}{},
		Sent: []*sentTrack{}, Received: []*receivedTrack{}, Errors: []string{}, PionWarnings: map[string]int{}}
	if *ivfPath != "" {
		b, err := os.ReadFile(*ivfPath)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		c.ivf = b
	}
	reason := c.run()
	if c.rtcpCount != nil {
		c.logf("%s", c.rtcpCount.summary())
	}
	if c.pc != nil {
		_ = c.pc.Close()
	}
	if reason != "" {
		c.mu.Lock()
		c.rep.ClosedEarly = &reason
		c.mu.Unlock()
		fmt.Fprintf(os.Stderr, "pion-client: ended early: %s\n", reason)
	}
	if err := c.writeReport(); err != nil {
		fmt.Fprintf(os.Stderr, "pion-client: writing report: %v\n", err)
		os.Exit(1)
	}
	c.mu.Lock()
	nerr := len(c.rep.Errors)
	c.mu.Unlock()
	if reason != "" || nerr > 0 {
		os.Exit(1)
	}
}
