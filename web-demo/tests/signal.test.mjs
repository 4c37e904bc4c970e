// The signaling socket's pure parts (signal.js): what a server frame is, close code descriptions, token claims.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { describeCloseCode, parseFrame, tokenClaims } from '../signal.js';

test('frames: a typed message, invalid JSON, or ignored', () => {
  assert.deepEqual(parseFrame('{"type":"pong","ts":5}'), { kind: 'message', msg: { type: 'pong', ts: 5 } });
  assert.deepEqual(parseFrame('{nope'), { kind: 'invalid' });
  assert.deepEqual(parseFrame('{"ts":5}'), { kind: 'ignored' }, 'no type');
  assert.deepEqual(parseFrame('{"type":3}'), { kind: 'ignored' }, 'a type that is not a string');
  assert.deepEqual(parseFrame('null'), { kind: 'ignored' });
  assert.deepEqual(parseFrame(new ArrayBuffer(2)), { kind: 'ignored' }, 'binary');
});

test('close codes are described', () => {
  assert.equal(describeCloseCode(4009), 'replaced: the same identity joined again elsewhere');
  assert.equal(describeCloseCode(4999), 'closed (code 4999)');
});

test('token claims: room and identity from the payload, unverified; empty for garbage', () => {
  const b64url = (/** @type {object} */ o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const token = `${b64url({ alg: 'HS256' })}.${b64url({ sub: 'zoë', video: { room: 'r1' } })}.sig`;
  assert.deepEqual(tokenClaims(token), { room: 'r1', identity: 'zoë' });
  assert.deepEqual(tokenClaims('not-a-token'), { room: '', identity: '' });
  assert.deepEqual(tokenClaims(`x.${b64url({ sub: 'a' })}.y`), { room: '', identity: 'a' });
});
