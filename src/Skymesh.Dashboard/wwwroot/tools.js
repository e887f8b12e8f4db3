// Tools the Topology and Paths pages share: a path's chain of hops with its labels, ping, traceroute and opening paths.

import { h, api, addr, fmtMicros, fmtMs, fmtPrice, shortAddr, invalidate } from './core.js';

/** A label, or "—" for none (0). */
export function labelText(n) {
  return n == null || Number(n) === 0 ? '—' : String(n);
}

/**
 * The chain of a path's hops: one .hop[data-node] per node with its short address and the labels it reads the path on
 * from the source's side (.label-forward) and from the destination's side (.label-back).
 */
export function hopsChain(hops, self) {
  const list = h('ol', { class: 'hops', 'aria-label': 'hops and their labels' });
  (hops || []).forEach((hop, i) => {
    list.append(h('li', { class: 'hop', 'data-node': hop.node, 'data-self': hop.node === self ? 'true' : null },
      h('span', { class: 'hop-index', 'aria-hidden': 'true' }, String(i)),
      addr(hop.node),
      h('span', { class: 'hop-labels' },
        h('span', { class: 'label-caption' }, 'fwd '), h('span', { class: 'label-forward', title: 'label this node reads the path on from the source\u2019s side' }, labelText(hop.forwardIn)),
        h('span', { class: 'label-caption' }, ' back '), h('span', { class: 'label-back', title: 'label this node reads the path on from the destination\u2019s side' }, labelText(hop.backIn)))));
  });
  return list;
}

/** Pings a node; resolves to a sentence. */
export async function ping(to) {
  const reply = await api('/api/ping', { method: 'POST', body: { to } });
  invalidate(['paths']);
  return `${fmtMicros(reply?.rttMicroseconds)} to ${shortAddr(to)}${reply?.opened ? ` (opened path ${reply.opened.id} first)` : ''}`;
}

/** Traces the route to a node; resolves to a table of its hops. */
export async function traceroute(to) {
  const hops = await api('/api/traceroute', { method: 'POST', body: { to } });
  invalidate(['paths']);
  const body = h('tbody');
  for (const hop of hops || []) {
    const trips = (hop.roundTripsMicroseconds || []).map((us) => fmtMs(us / 1000)).join(', ');
    body.append(h('tr', { 'data-node': hop.node ?? '' },
      h('td', null, String(hop.hop ?? '')),
      h('td', null, hop.node ? addr(hop.node) : '—'),
      h('td', null, hop.announcedLinkRttMicroseconds == null ? '—' : fmtMicros(hop.announcedLinkRttMicroseconds)),
      h('td', null, trips || '—'),
      h('td', { class: hop.error ? 'error-text' : null }, hop.error || '')));
  }
  return h('div', { class: 'trace' },
    h('h3', null, `Traceroute to ${shortAddr(to)}`),
    h('div', { class: 'table-wrap' }, h('table', { class: 'trace-table' },
      h('thead', null, h('tr', null, ['Hop', 'Node', 'Announced link RTT', 'Round trips', 'Error'].map((x) => h('th', { scope: 'col' }, x)))),
      body)));
}

/** Opens a path (slow: the control plane sets it up hop by hop); resolves to the path. */
export async function openPath(body) {
  const path = await api('/api/paths/open', { method: 'POST', body });
  invalidate(['paths', 'node']);
  return path;
}

/** What an opened path looks like for people: its id, state and hops with their labels. */
export function pathSummary(path, self) {
  return h('div', { class: 'path-summary', 'data-path-id': path?.id },
    h('p', null, `Path ${path?.id ?? '?'} to `, addr(path?.peer), ` — ${path?.state ?? 'up'}`,
      path?.price != null ? `, price ${fmtPrice(path.price)}` : ''),
    path?.hops?.length ? hopsChain(path.hops, self) : h('p', { class: 'muted' }, 'the node did not report the hops of this path'));
}

/** A ping result cell's text for an error. */
export function errorText(e) {
  return `failed: ${e?.message ?? e}`;
}
