// Chromium in a cluster (issue 18): three real `courier` nodes sharing the test Redis and PostgreSQL
// (COURIER_TEST_REDIS_URL, COURIER_TEST_POSTGRES_URL, started by scripts/test.sh). Two demo pages join one room
// through different nodes; the page that reached the wrong node is redirected by the client library itself (no
// error, no reconnect), both end on the node that hosts the room, the demo shows which node (beside the room name,
// and on every tile the node that serves that participant), and each decodes the other's video and receives its
// audio. Screenshot: test-artifacts/cluster.png.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { ARTIFACTS, launchChromium, openDemoPage, startCourier, waitForMediaFrom } from './harness.mjs';

const T = 30_000;
const REDIS = process.env.COURIER_TEST_REDIS_URL;
const POSTGRES = process.env.COURIER_TEST_POSTGRES_URL;

test('two pages joining through different nodes meet on the room\'s node', { timeout: 180_000 }, async (t) => {
  if (!REDIS || !POSTGRES) {
    assert.ok(!process.env.CI, 'CI must run the cluster browser test: COURIER_TEST_REDIS_URL/POSTGRES_URL not set');
    t.skip('no test Redis or PostgreSQL');
    return;
  }
  // A database of its own in the shared Redis (the Rust cluster tests use 1..=6).
  const redis = REDIS.replace(/\/\d*$/, '/7');
  const suffix = `${process.pid}`;
  /** @type {Awaited<ReturnType<typeof startCourier>>[]} */ const nodes = [];
  /** @type {import('playwright-core').Browser|null} */ let browser = null;
  try {
    for (const n of ['a', 'b', 'c']) {
      nodes.push(
        await startCourier(`courier-cluster-${n}`, {
          COURIER_CLUSTER_REDIS_URL: redis,
          COURIER_CLUSTER_NODE_ID: `web-${n}-${suffix}`,
          COURIER_CHAT_STORE: 'postgres',
          COURIER_CHAT_POSTGRES_URL: POSTGRES,
        }),
      );
    }
    const room = `cluster-${suffix}`;
    browser = await launchChromium();
    const params = { capture: '640x360' };
    const alice = await openDemoPage(browser, { http: nodes[0].http, url: nodes[0].url, room, identity: 'alice', params });
    const bob = await openDemoPage(browser, { http: nodes[2].http, url: nodes[2].url, room, identity: 'bob', params });
    const where = (/** @type {import('playwright-core').Page} */ page) =>
      page.evaluate(() => {
        const c = /** @type {any} */ (window).courier;
        const label = /** @type {HTMLElement} */ (document.querySelector('#node-id'));
        return { url: c.url, node: c.node, label: label.hidden ? '' : label.textContent };
      });
    const [a, b] = [await where(alice), await where(bob)];
    assert.equal(a.url, b.url, `both pages on the room's node: ${JSON.stringify({ a, b })}`);
    // A page that reached another node was redirected, and the demo says where it is; one that reached the room's
    // node was not. (Bob reached node c: the room lives where alice's join placed it, node a unless a was busier.)
    for (const [x, entry] of [[a, nodes[0].url], [b, nodes[2].url]]) {
      const moved = entry !== a.url;
      assert.equal(Boolean(x.node), moved, `redirected iff it reached another node: ${JSON.stringify({ a, b })}`);
      assert.equal(x.label, moved ? `node: ${x.node}` : '', 'the demo shows the node after a redirect');
    }
    assert.ok(a.node || b.node, 'at least one page was redirected (they reached different nodes)');
    await waitForMediaFrom(alice, ['bob'], 'alice', T);
    await waitForMediaFrom(bob, ['alice'], 'bob', T);
    // Both tiles of each page, the own one and the other's, name the room's node (the region is `default`).
    const host = `web-${'abc'[nodes.findIndex((n) => n.url === a.url)]}-${suffix}`;
    for (const page of [alice, bob]) {
      const badges = await page.evaluate(() =>
        [...document.querySelectorAll('.tile .node-badge')].map((b) => ({
          node: /** @type {HTMLElement} */ (b).dataset.node ?? '',
          text: b.textContent,
        })),
      );
      assert.deepEqual(badges, [{ node: host, text: `${host} · default` }, { node: host, text: `${host} · default` }]);
    }
    await bob.screenshot({ path: path.join(ARTIFACTS, 'cluster.png') });
  } finally {
    await browser?.close();
    for (const n of nodes) await n.stop();
  }
});
