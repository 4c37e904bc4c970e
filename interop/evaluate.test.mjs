// Unit tests of the interop matrix's verdicts (evaluate.mjs): reports in, verdicts out. `node --test interop/`.
import assert from 'node:assert/strict';
import test from 'node:test';
import { connectedWholeRun, evaluate, renderDocs } from './evaluate.mjs';

const W = { start_ms: 10_000, end_ms: 70_000 };

function report(stack, pid, { sent, received, states, closed_early = null, errors = [] }) {
  return {
    stack,
    stack_version: `${stack} 1.0`,
    participant_id: pid,
    joined_ms: 1000,
    connected_ms: 1500,
    states: states ?? [[1200, 'connecting'], [1500, 'connected']],
    closed_early,
    sent,
    received,
    errors,
  };
}

const sentOf = (p, v, a) => [
  { mid: '0', kind: 'audio', track_id: `TR_${p}a`, units: 'packets', window: a, total: a + 100 },
  { mid: '1', kind: 'video', track_id: `TR_${p}v`, units: 'frames', window: v, total: v + 100 },
];
const recvOf = (p, v, a, first = 2000) => [
  { track_id: `TR_${p}a`, participant_id: `PA_${p}`, kind: 'audio', units: 'packets', first_ms: first, window: a, total: a },
  { track_id: `TR_${p}v`, participant_id: `PA_${p}`, kind: 'video', units: 'frames', first_ms: first + 500, window: v, total: v },
];
const poll = (at, bwe) => ({ at_ms: at, participants: Object.entries(bwe).map(([identity, b]) => ({ id: `PA_${identity}`, identity, bandwidth_estimate_bps: b })) });

function input(overrides = {}) {
  return {
    window: W,
    bwe_polls: [poll(10_000, { chromium: 1e6, pion: 2e6, aiortc: null }), poll(69_700, { chromium: 1.5e6, pion: 2e6, aiortc: null })],
    stacks: {
      chromium: { available: true, exit_code: 0, report: report('chromium', 'PA_chromium', { sent: sentOf('chromium', 1800, 3000), received: [...recvOf('pion', 1790, 3000), ...recvOf('aiortc', 1800, 2990)] }) },
      pion: { available: true, exit_code: 0, report: report('pion', 'PA_pion', { sent: sentOf('pion', 1800, 3000), received: [...recvOf('chromium', 1800, 3000), ...recvOf('aiortc', 1800, 3000)] }) },
      aiortc: { available: true, exit_code: 0, report: report('aiortc', 'PA_aiortc', { sent: sentOf('aiortc', 1800, 3000), received: [...recvOf('chromium', 1800, 3000), ...recvOf('pion', 1800, 3000)] }) },
      gstreamer: { available: false, reason: 'not available (no interop/gstreamer/setup.sh)' },
      ...overrides,
    },
  };
}

test('a clean run passes; aiortc needs no estimate; a missing stack is not a failure', () => {
  const v = evaluate(input());
  assert.deepEqual(v.failures, []);
  assert.equal(v.ok, true);
  assert.equal(v.stacks.chromium.bwe_at_window_end_bps, 1.5e6);
  assert.equal(v.stacks.aiortc.bwe_at_window_end_bps, null);
  assert.equal(v.stacks.aiortc.ok, true);
  assert.equal(v.stacks.gstreamer.available, false);
  assert.equal(v.stacks.chromium.time_to_first_frame_ms, 1500); // worst video track: 2500 - max(1000, 1000)
  const cell = v.cells.find((c) => c.publisher === 'pion' && c.subscriber === 'chromium' && c.kind === 'video');
  assert.deepEqual([cell.received, cell.sent, cell.ok], [1790, 1800, true]);
  assert.equal(v.cells.filter((c) => c.why === 'not available').length, 3 * 2 * 2);
  const md = renderDocs(v, { date: 'd', window_secs: 60, courier_version: 'courier 0' });
  assert.match(md, /\| \*\*pion\*\* \| video 1790\/1800 ✓ · audio 3000\/3000 ✓ \| — \|/);
});

test('a cell more than 1 % off fails, exactly 1 % passes', () => {
  const i = input();
  i.stacks.pion.report.received[2].window = 2969; // aiortc's audio: 3000 sent, 31 missing
  i.stacks.aiortc.report.received[1].window = 1782; // chromium's video: 18 missing = 1 %
  const v = evaluate(i);
  assert.equal(v.ok, false);
  assert.deepEqual(v.failures, ['aiortc → pion audio: pion received 2969 of 3000 packets (more than 1 % off)']);
});

test("a short cell names the subscriber's own socket drops, and still fails", () => {
  const i = input();
  i.stacks.pion.report.received[2].window = 2969;
  i.udp_drops = { courier: 0, pion: 31, aiortc: 0 };
  const v = evaluate(i);
  assert.deepEqual(v.failures, ["aiortc → pion audio: pion received 2969 of 3000 packets (more than 1 % off); pion's own UDP sockets dropped 31 datagrams in the window (not read in time)"]);
  assert.equal(v.stacks.pion.udp_drops_in_window, 31);
  assert.equal(v.stacks.chromium.udp_drops_in_window, null);
});

test('a track never received fails its cell; a publisher that sent nothing in the window fails', () => {
  const i = input();
  i.stacks.pion.report.received = i.stacks.pion.report.received.filter((r) => r.track_id !== 'TR_chromiumv');
  i.stacks.aiortc.report.sent[0].window = 0;
  const v = evaluate(i);
  assert.ok(v.failures.includes('chromium → pion video: pion did not receive chromium\'s video (TR_chromiumv)'));
  assert.ok(v.failures.includes('aiortc → chromium audio: aiortc sent no audio in the window'));
  assert.equal(v.stacks.pion.time_to_first_frame_ms, 1500);
});

test('connected for the whole run', () => {
  const ok = { report: report('x', 'PA_x', { sent: [], received: [], states: [[1, 'connecting'], [2, 'connected'], [W.end_ms + 10, 'closed']] }), exit_code: 0 };
  assert.deepEqual(connectedWholeRun(ok, W), { ok: true, why: [] });
  const dropped = { report: report('x', 'PA_x', { sent: [], received: [], states: [[1, 'connected'], [20_000, 'disconnected'], [21_000, 'connected']] }), exit_code: 0 };
  assert.equal(connectedWholeRun(dropped, W).ok, false);
  const early = { report: report('x', 'PA_x', { sent: [], received: [], closed_early: 'closed 1001' }), exit_code: 1 };
  assert.deepEqual(connectedWholeRun(early, W).why, ['closed early: closed 1001', 'exit code 1']);
  const never = { report: { ...report('x', 'PA_x', { sent: [], received: [], states: [[1, 'connecting'], [9, 'failed']] }), connected_ms: null }, exit_code: 0 };
  assert.equal(connectedWholeRun(never, W).why[0], 'never connected');
  assert.equal(connectedWholeRun({ report: null }, W).ok, false);
  assert.deepEqual(connectedWholeRun({ ...ok, timed_out: true, exit_code: null }, W).why, ['did not exit in time (killed)']);
});

test('a TWCC stack without an estimate at window end fails; an unavailable stack whose setup failed fails', () => {
  const i = input({ gstreamer: { available: false, setup_failed: true, reason: 'setup failed: exit 1' } });
  i.bwe_polls[1] = poll(69_700, { chromium: null, pion: 2e6 });
  const v = evaluate(i);
  assert.equal(v.stacks.chromium.ok, false);
  assert.match(v.stacks.chromium.why[0], /no bandwidth estimate at window end \(seen in 1\/2 polls\)/);
  assert.ok(v.failures.includes('gstreamer: setup failed: setup failed: exit 1'));
});

test('time to first frame counts from when both ends were in the room', () => {
  const inp = input();
  // Both publishers chromium receives from joined at 2400; their first video frames reached it at 2500.
  inp.stacks.pion.report.joined_ms = 2400;
  inp.stacks.aiortc.report.joined_ms = 2400;
  const v = evaluate(inp);
  assert.equal(v.stacks.chromium.time_to_first_frame_ms, 100);
  // pion receives chromium (joined 1000) at 2500: from pion's own join, 2400.
  assert.equal(v.stacks.pion.time_to_first_frame_ms, 100);
});
