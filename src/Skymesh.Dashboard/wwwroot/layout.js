// A force-directed layout for the mesh map: springs along links, repulsion between every pair of nodes approximated
// by a Barnes–Hut quadtree (O(n log n) per iteration), a weak pull to the centre so separate parts stay near, and a
// temperature that caps how far a node moves and cools to zero. Run in slices of a few milliseconds so the page
// stays responsive; nodes that had a place keep it (they move little), new ones start beside a placed neighbour.

const THETA2 = 0.81; // (Barnes–Hut θ = 0.9)²
const MAX_DEPTH = 40;

/** Maps of at most this many nodes are laid out whole again whenever they change. */
export const SMALL = 60;

export class ForceLayout {
  /** k: the ideal length of a link, in map units. */
  constructor(k = 60) {
    this.k = k;
    this.ids = [];
    this.index = new Map();
    this.n = 0;
    this.x = new Float64Array(0);
    this.y = new Float64Array(0);
    this.fx = new Float64Array(0);
    this.fy = new Float64Array(0);
    this.mobility = new Float64Array(0);
    this.edges = new Int32Array(0);
    this.fixed = -1;
    this.remaining = 0;
    this.total = 0;
    this.t0 = 0;
    this.capacity = 0;
    this.random = mulberry32(0x5eed);
  }

  /**
   * Sets the graph: ids (strings), pairs [[a, b], …] of ids, the id held at (0, 0), and the positions known before
   * (Map id → {x, y}). Returns how many nodes had no position.
   */
  setGraph(ids, pairs, fixedId, known) {
    const n = ids.length;
    this.ids = ids;
    this.n = n;
    this.index = new Map(ids.map((id, i) => [id, i]));
    this.x = new Float64Array(n);
    this.y = new Float64Array(n);
    this.fx = new Float64Array(n);
    this.fy = new Float64Array(n);
    this.mobility = new Float64Array(n).fill(1);
    const edges = [];
    const adjacency = Array.from({ length: n }, () => []);
    for (const [a, b] of pairs) {
      const i = this.index.get(a);
      const j = this.index.get(b);
      if (i == null || j == null || i === j) continue;
      edges.push(i, j);
      adjacency[i].push(j);
      adjacency[j].push(i);
    }
    this.edges = Int32Array.from(edges);
    this.fixed = fixedId != null && this.index.has(fixedId) ? this.index.get(fixedId) : -1;

    const placed = new Uint8Array(n);
    const queue = [];
    for (let i = 0; i < n; i++) {
      const p = known?.get(ids[i]);
      if (p && Number.isFinite(p.x) && Number.isFinite(p.y)) {
        // A little jitter: a map that grew one node at a time outwards may lie on a line, and forces along a line
        // never leave it.
        this.x[i] = p.x + (this.random() - 0.5) * 2;
        this.y[i] = p.y + (this.random() - 0.5) * 2;
        placed[i] = 1;
        // A small map settles whole each time (it is cheap and it finds its shape); a large one keeps what it had.
        this.mobility[i] = n <= SMALL ? 1 : 0.05;
        queue.push(i);
      }
    }
    if (this.fixed >= 0) {
      this.x[this.fixed] = 0;
      this.y[this.fixed] = 0;
      if (!placed[this.fixed]) {
        placed[this.fixed] = 1;
        queue.unshift(this.fixed);
      }
    }
    let fresh = 0;
    // Breadth first from what has a place: each new node beside a placed neighbour, outwards from the centre.
    for (let q = 0; q < queue.length; q++) {
      const i = queue[q];
      const base = Math.hypot(this.x[i], this.y[i]) > 1 ? Math.atan2(this.y[i], this.x[i]) : this.random() * 2 * Math.PI;
      for (const j of adjacency[i]) {
        if (placed[j]) continue;
        const angle = base + (this.random() - 0.5) * 2.4;
        const r = this.k * (0.7 + this.random() * 0.6);
        this.x[j] = this.x[i] + Math.cos(angle) * r;
        this.y[j] = this.y[i] + Math.sin(angle) * r;
        placed[j] = 1;
        fresh++;
        queue.push(j);
      }
    }
    // Nodes joined to nothing placed: on a ring around what is.
    let extent = this.k;
    for (let i = 0; i < n; i++) if (placed[i]) extent = Math.max(extent, Math.hypot(this.x[i], this.y[i]));
    for (let i = 0; i < n; i++) {
      if (placed[i]) continue;
      const angle = this.random() * 2 * Math.PI;
      const r = extent + this.k * (1 + this.random());
      this.x[i] = Math.cos(angle) * r;
      this.y[i] = Math.sin(angle) * r;
      placed[i] = 1;
      fresh++;
      // Its neighbours (also unplaced so far) start beside it.
      const around = [i];
      for (let q = 0; q < around.length; q++) {
        const a = around[q];
        for (const j of adjacency[a]) {
          if (placed[j]) continue;
          const t = this.random() * 2 * Math.PI;
          this.x[j] = this.x[a] + Math.cos(t) * this.k;
          this.y[j] = this.y[a] + Math.sin(t) * this.k;
          placed[j] = 1;
          fresh++;
          around.push(j);
        }
      }
    }
    // Everything moves freely when most of the map is new.
    if (fresh > n / 3) this.mobility.fill(1);
    return fresh;
  }

  /** Starts (or restarts) a run of `iterations` with a starting temperature (the largest step, in map units). */
  start(iterations, temperature) {
    this.remaining = iterations;
    this.total = iterations;
    this.t0 = temperature;
  }

  get running() {
    return this.remaining > 0;
  }

  /** Runs iterations for at most budgetMs milliseconds; true while there is more to do. */
  step(budgetMs = 8) {
    const end = now() + budgetMs;
    do {
      if (this.remaining <= 0) return false;
      const temperature = Math.max(0.5, this.t0 * (this.remaining / this.total));
      this.iterate(temperature);
      this.remaining--;
    } while (now() < end);
    return this.remaining > 0;
  }

  /** Where a node is ({x, y}), or undefined. */
  position(id) {
    const i = this.index.get(id);
    return i == null ? undefined : { x: this.x[i], y: this.y[i] };
  }

  iterate(temperature) {
    const { n, x, y, fx, fy, k } = this;
    if (n === 0) return;
    const k2 = k * k;
    fx.fill(0);
    fy.fill(0);
    this.buildTree();
    // Repulsion: k²/d from every other node (far groups as one body at their centre of mass).
    const { mass, sx, sy, size, child, body } = this;
    const stack = this.stack;
    for (let i = 0; i < n; i++) {
      let top = 0;
      stack[top++] = 0;
      let ax = 0;
      let ay = 0;
      const xi = x[i];
      const yi = y[i];
      while (top > 0) {
        const c = stack[--top];
        const m = mass[c];
        if (m === 0) continue;
        const leaf = child[c] === -1;
        if (leaf && body[c] === i && m === 1) continue;
        let dx = xi - sx[c] / m;
        let dy = yi - sy[c] / m;
        let d2 = dx * dx + dy * dy;
        if (leaf || size[c] * size[c] < THETA2 * d2) {
          if (d2 < 1e-4) {
            dx = (this.random() - 0.5) * 0.1;
            dy = (this.random() - 0.5) * 0.1;
            d2 = dx * dx + dy * dy + 1e-6;
          }
          const f = (k2 * (leaf && body[c] === i ? m - 1 : m)) / d2;
          ax += dx * f;
          ay += dy * f;
        } else {
          const first = child[c];
          stack[top++] = first;
          stack[top++] = first + 1;
          stack[top++] = first + 2;
          stack[top++] = first + 3;
        }
      }
      fx[i] = ax;
      fy[i] = ay;
    }
    // Springs: d²/k along each link.
    const edges = this.edges;
    for (let e = 0; e < edges.length; e += 2) {
      const i = edges[e];
      const j = edges[e + 1];
      const dx = x[i] - x[j];
      const dy = y[i] - y[j];
      const d = Math.sqrt(dx * dx + dy * dy) || 0.01;
      const f = d / k;
      fx[i] -= dx * f;
      fy[i] -= dy * f;
      fx[j] += dx * f;
      fy[j] += dy * f;
    }
    // Gravity towards the centre, and the move, capped by the temperature.
    const gravity = 0.06;
    for (let i = 0; i < n; i++) {
      if (i === this.fixed) continue;
      fx[i] -= gravity * x[i];
      fy[i] -= gravity * y[i];
      const len = Math.sqrt(fx[i] * fx[i] + fy[i] * fy[i]);
      if (len === 0) continue;
      const move = Math.min(len, temperature) * this.mobility[i];
      x[i] += (fx[i] / len) * move;
      y[i] += (fy[i] / len) * move;
    }
  }

  /** The quadtree over the current positions, in flat arrays (cell 0 is the root; children are four in a row). */
  buildTree() {
    const { n, x, y } = this;
    const needed = 8 * n + 64;
    if (this.capacity < needed) {
      this.capacity = needed;
      this.mass = new Float64Array(needed);
      this.sx = new Float64Array(needed);
      this.sy = new Float64Array(needed);
      this.x0 = new Float64Array(needed);
      this.y0 = new Float64Array(needed);
      this.size = new Float64Array(needed);
      this.child = new Int32Array(needed);
      this.body = new Int32Array(needed);
      this.stack = new Int32Array(needed + 16);
    }
    let minX = Infinity;
    let minY = Infinity;
    let maxX = -Infinity;
    let maxY = -Infinity;
    for (let i = 0; i < n; i++) {
      if (x[i] < minX) minX = x[i];
      if (x[i] > maxX) maxX = x[i];
      if (y[i] < minY) minY = y[i];
      if (y[i] > maxY) maxY = y[i];
    }
    this.cells = 0;
    this.newCell(minX, minY, Math.max(maxX - minX, maxY - minY) + 1);
    for (let i = 0; i < n; i++) this.insert(0, i, 0);
  }

  newCell(x0, y0, size) {
    const c = this.cells++;
    if (c >= this.capacity) this.grow();
    this.mass[c] = 0;
    this.sx[c] = 0;
    this.sy[c] = 0;
    this.x0[c] = x0;
    this.y0[c] = y0;
    this.size[c] = size;
    this.child[c] = -1;
    this.body[c] = -1;
    return c;
  }

  grow() {
    const capacity = this.capacity * 2;
    for (const name of ['mass', 'sx', 'sy', 'x0', 'y0', 'size']) {
      const next = new Float64Array(capacity);
      next.set(this[name]);
      this[name] = next;
    }
    for (const name of ['child', 'body']) {
      const next = new Int32Array(capacity);
      next.set(this[name]);
      this[name] = next;
    }
    this.stack = new Int32Array(capacity + 16);
    this.capacity = capacity;
  }

  quadrant(c, px, py) {
    const half = this.size[c] / 2;
    return (px >= this.x0[c] + half ? 1 : 0) + (py >= this.y0[c] + half ? 2 : 0);
  }

  insert(start, i, startDepth) {
    const px = this.x[i];
    const py = this.y[i];
    let c = start;
    let depth = startDepth;
    for (;;) {
      this.mass[c] += 1;
      this.sx[c] += px;
      this.sy[c] += py;
      if (this.child[c] === -1) {
        if (this.mass[c] === 1) {
          this.body[c] = i;
          return;
        }
        if (depth >= MAX_DEPTH) return; // Nodes on one spot: counted together.
        // Split: four children, the body that was here moves down into one.
        const half = this.size[c] / 2;
        const x0 = this.x0[c];
        const y0 = this.y0[c];
        const first = this.newCell(x0, y0, half);
        this.newCell(x0 + half, y0, half);
        this.newCell(x0, y0 + half, half);
        this.newCell(x0 + half, y0 + half, half);
        this.child[c] = first;
        const b = this.body[c];
        this.body[c] = -1;
        if (b >= 0) this.insert(first + this.quadrant(c, this.x[b], this.y[b]), b, depth + 1);
      }
      c = this.child[c] + this.quadrant(c, px, py);
      depth++;
    }
  }
}

function now() {
  return typeof performance !== 'undefined' ? performance.now() : Date.now();
}

/** A small seeded random source, so a map is laid out the same way each time it is drawn. */
function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
