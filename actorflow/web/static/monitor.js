"use strict";
const SVG = "http://www.w3.org/2000/svg";
let shownFlows = "";

function el(tag, attrs, children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  for (const child of [].concat(children === undefined ? [] : children)) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function clip(text, n) { return text.length > n ? text.slice(0, n - 1) + "\u2026" : text; }

function table(columns, rows, empty) {
  if (!rows.length) return el("p", {class: "empty"}, empty);
  const head = el("tr", {}, columns.map(c => el("th", c.num ? {class: "num"} : {}, c.title)));
  const body = rows.map(row => el("tr", {}, columns.map(c => {
    const value = c.get(row);
    const cls = c.num ? "num" : (c.cls ? c.cls(row) : "");
    return el("td", cls ? {class: cls} : {}, value instanceof Node ? value : [value]);
  })));
  return el("table", {}, [el("thead", {}, head), el("tbody", {}, body)]);
}

function badge(text, kind) { return el("span", {class: "badge " + (kind || text)}, text); }
function time(iso) { return iso ? new Date(iso).toLocaleTimeString() : "\u2013"; }
function ms(value) {
  if (value === null || value === undefined) return "\u2013";
  return value.toFixed(value >= 100 ? 0 : value >= 1 ? 1 : 3);
}

// -- the flow graph: layers by longest path, boxes left to right, curved edges -------------
function layout(flow) {
  const ids = flow.routines.map(r => r.routine_id);
  const layer = Object.fromEntries(ids.map(id => [id, 0]));
  for (let round = 0; round < ids.length; round++) {
    let changed = false;
    for (const c of flow.connections) {
      const want = layer[c.source] + 1;
      if (c.source !== c.target && want > layer[c.target] && want < ids.length) {
        layer[c.target] = want; changed = true;
      }
    }
    if (!changed) break;
  }
  // edges that skip a column run above the boxes; edges going back run below them
  const over = flow.connections.filter(c => layer[c.target] - layer[c.source] > 1);
  const under = flow.connections.filter(
    c => c.source !== c.target && layer[c.target] <= layer[c.source]);
  const loops = flow.connections.some(c => c.source === c.target);
  const lineH = 17, gapY = 28, pad = 20, lane = 18;
  const top = pad + (over.length ? 18 + lane * over.length : 0);
  const labels = flow.connections.map(c => clip(c.event + " \u2192 " + c.slot, 34).length);
  const gapX = Math.max(100, 6.4 * Math.max(0, ...labels) + 40);
  const columns = [];
  for (const r of flow.routines) (columns[layer[r.routine_id]] ||= []).push(r);
  const boxes = {};
  const heights = [];
  let x = pad;
  for (const column of columns.filter(Boolean)) {
    let colW = 0, colH = 0;
    for (const r of column) {
      const meta = ["in: " + (r.slots.join(", ") || "\u2013"),
                    "out: " + (r.events.join(", ") || "\u2013")];
      const w = Math.min(320, Math.max(236, 24 + 8.4 * clip(r.routine_id, 34).length,
                                       24 + 6.4 * Math.max(...meta.map(l => clip(l, 40).length))));
      boxes[r.routine_id] = {r, w, h: 4 * lineH + 16, layer: layer[r.routine_id]};
      colW = Math.max(colW, w); colH += 4 * lineH + 16 + gapY;
    }
    heights.push(colH - gapY);
    for (const r of column) boxes[r.routine_id].x = x;
    x += colW + gapX;
  }
  const tallest = Math.max(0, ...heights);
  columns.filter(Boolean).forEach((column, i) => {
    let y = top + (tallest - heights[i]) / 2;
    for (const r of column) { boxes[r.routine_id].y = y; y += boxes[r.routine_id].h + gapY; }
  });
  const bottom = top + tallest;
  const below = (under.length ? 18 + lane * under.length : 0) + (loops ? 44 : 0);
  return {boxes, over, under, top, bottom, lane, pad,
          width: Math.max(x - gapX + pad, 300), height: bottom + below + pad};
}

function lanePath(x1, y1, x2, y2, yl) {
  // down (or up) from (x1, y1) to the lane at yl, along it, then to (x2, y2); rounded corners
  const s = yl < y1 ? -1 : 1, r = 8, t = x2 > x1 ? 1 : -1;
  return `M${x1},${y1} L${x1},${yl - s * r} Q${x1},${yl} ${x1 + t * r},${yl} ` +
         `L${x2 - t * r},${yl} Q${x2},${yl} ${x2},${yl - s * r} L${x2},${y2}`;
}

function drawFlow(flow) {
  const {boxes, over, under, top, bottom, lane, pad, width, height} = layout(flow);
  const root = svg("svg", {class: "flow", width, height, viewBox: `0 0 ${width} ${height}`,
                           role: "img", "aria-label": "flow " + flow.flow_id});
  const arrow = "arrow-" + flow.flow_id.replace(/[^A-Za-z0-9_-]/g, "_");
  const defs = svg("defs");
  const marker = svg("marker", {id: arrow, viewBox: "0 0 10 10", refX: 9, refY: 5,
                                markerWidth: 7, markerHeight: 7, orient: "auto"});
  marker.append(svg("path", {d: "M0,0 L10,5 L0,10 z", fill: "#8a94a6"}));
  defs.append(marker); root.append(defs);
  const seen = {};
  for (const c of flow.connections) {
    const a = boxes[c.source], b = boxes[c.target];
    const key = c.source + "\u0000" + c.target;
    const nth = seen[key] = (seen[key] || 0) + 1;
    let d, lx, ly;
    if (c.source === c.target) {
      const x1 = a.x + a.w - 60, x2 = a.x + a.w - 20, y0 = a.y + a.h;
      const dip = y0 + 36 + (nth - 1) * 16;
      d = `M${x1},${y0} C${x1 - 10},${dip} ${x2 + 10},${dip} ${x2},${y0}`;
      lx = (x1 + x2) / 2; ly = dip + 2;
    } else if (over.includes(c)) {
      const yl = pad + 9 + lane * over.indexOf(c);
      const x1 = a.x + a.w * 0.7, x2 = b.x + b.w * 0.3;
      d = lanePath(x1, a.y, x2, b.y, yl);
      lx = (x1 + x2) / 2; ly = yl;
    } else if (under.includes(c)) {
      const yl = bottom + 18 + lane * under.indexOf(c);
      const x1 = a.x + a.w * 0.3, x2 = b.x + b.w * 0.7;
      d = lanePath(x1, a.y + a.h, x2, b.y + b.h, yl);
      lx = (x1 + x2) / 2; ly = yl;
    } else {
      const x1 = a.x + a.w, y1 = a.y + a.h / 2, x2 = b.x, y2 = b.y + b.h / 2;
      const dx = (x2 - x1) / 2;
      d = `M${x1},${y1} C${x1 + dx},${y1} ${x2 - dx},${y2} ${x2},${y2}`;
      lx = (x1 + x2) / 2; ly = (y1 + y2) / 2 + (nth - 1) * 16;
    }
    root.append(svg("path", {class: "edge", d, "marker-end": `url(#${arrow})`}));
    const label = svg("g", {class: "edge-label"});
    const text = clip(c.event + " \u2192 " + c.slot, 34);
    const tw = 6.4 * text.length + 8;
    label.append(svg("rect", {x: lx - tw / 2, y: ly - 8, width: tw, height: 16, rx: 3}));
    label.append(svg("text", {x: lx, y: ly + 4, "text-anchor": "middle"}, text));
    root.append(label);
  }
  for (const {r, x, y, w, h} of Object.values(boxes)) {
    const g = svg("g", {class: "node", "data-routine": r.routine_id});
    g.append(svg("rect", {x, y, width: w, height: h, rx: 7}));
    g.append(svg("text", {class: "title", x: x + 10, y: y + 21}, clip(r.routine_id, 34)));
    g.append(svg("text", {class: "meta", x: x + 10, y: y + 39},
                 clip("in: " + (r.slots.join(", ") || "\u2013"), 40)));
    g.append(svg("text", {class: "meta", x: x + 10, y: y + 56},
                 clip("out: " + (r.events.join(", ") || "\u2013"), 40)));
    const live = svg("text", {class: "live", x: x + 10, y: y + 75});
    live.append(svg("tspan", {"data-count": "handled"}, "handled \u2013"));
    live.append(svg("tspan", {dx: 10, "data-count": "failed"}, "failed \u2013"));
    live.append(svg("tspan", {dx: 10, "data-count": "queued"}, "queued \u2013"));
    g.append(live);
    root.append(g);
  }
  return root;
}

function showFlows(flows) {
  const key = JSON.stringify(flows.map(f => [f.flow_id, f.mermaid]));
  if (key === shownFlows) return;
  shownFlows = key;
  const box = document.getElementById("flows");
  box.replaceChildren();
  if (!flows.length) { box.append(el("p", {class: "empty"}, "no flow is running")); return; }
  for (const flow of flows) {
    const part = el("div", {class: "flow-block", "data-flow": flow.flow_id});
    part.append(el("h3", {}, flow.flow_id));
    part.append(drawFlow(flow));
    part.append(el("details", {}, [el("summary", {}, "Mermaid source"),
                                  el("pre", {}, el("code", {}, flow.mermaid))]));
    box.append(part);
  }
}

function showRoutineCounts(metrics, flows) {
  for (const flow of flows) {
    const totals = {};
    for (const [workerId, routines] of Object.entries(metrics.routines)) {
      if ((metrics.workers[workerId] || {}).flow_id !== flow.flow_id) continue;
      for (const [id, f] of Object.entries(routines)) {
        const t = totals[id] ||= {handled: 0, failed: 0, queued: 0};
        t.handled += f.handled; t.failed += f.failed; t.queued += f.mailbox_depth;
      }
    }
    const part = document.querySelector(`.flow-block[data-flow="${CSS.escape(flow.flow_id)}"]`);
    if (!part) continue;
    for (const node of part.querySelectorAll(".node")) {
      const t = totals[node.dataset.routine] || {handled: 0, failed: 0, queued: 0};
      for (const span of node.querySelectorAll("tspan")) {
        const name = span.dataset.count;
        span.textContent = name + " " + t[name];
        span.setAttribute("class", name === "failed" && t.failed ? "bad" : "");
      }
      node.classList.toggle("failing", t.failed > 0);
      node.classList.toggle("busy", t.queued > 0);
    }
  }
}


function showTables(snapshot) {
  const {metrics, workers, jobs, dead_letters: dead, failures} = snapshot;
  document.getElementById("workers").replaceChildren(table([
    {title: "worker", get: w => w.worker_id}, {title: "flow", get: w => w.flow_id},
    {title: "status", get: w => badge(w.status, w.status === "running" ? "up" : w.status)},
    {title: "restarts", num: true, get: w => w.restarts},
    {title: "active", num: true, get: w => w.jobs.active},
    {title: "completed", num: true, get: w => w.jobs.completed},
    {title: "failed", num: true, get: w => w.jobs.failed},
    {title: "cancelled", num: true, get: w => w.jobs.cancelled},
  ], workers, "no worker yet"));
  const rows = [];
  for (const [workerId, routines] of Object.entries(metrics.routines)) {
    for (const [id, f] of Object.entries(routines)) rows.push({workerId, id, ...f});
  }
  document.getElementById("routines").replaceChildren(table([
    {title: "worker", get: r => r.workerId}, {title: "routine", get: r => r.id},
    {title: "handled", num: true, get: r => r.handled},
    {title: "queued", num: true, get: r => r.mailbox_depth},
    {title: "mean ms", num: true, get: r => r.handling_seconds.count ?
      ms(1000 * r.handling_seconds.sum / r.handling_seconds.count) : "\u2013"},
  ], rows, "no routine yet"));
  document.getElementById("failures").replaceChildren(table([
    {title: "flow", get: f => f.flow_id}, {title: "routine", get: f => f.routine_id},
    {title: "raised", num: true, get: f => f.raised},
    {title: "retried", num: true, get: f => f.retried},
    {title: "jobs failed", num: true, get: f => f.jobs_failed},
  ], failures, "no failure"));
  const jobTable = table([
    {title: "job", get: j => j.job_id}, {title: "flow", get: j => j.flow_id},
    {title: "status", get: j => badge(j.status)},
    {title: "created", get: j => time(j.created_at)},
    {title: "ms", num: true, get: j => ms(j.duration_ms)},
    {title: "error", cls: () => "err", get: j => j.error || ""},
  ], jobs.jobs, "no job yet");
  const bodyRows = jobTable.querySelectorAll("tbody tr");
  jobs.jobs.forEach((job, i) => {
    const tr = bodyRows[i];
    tr.classList.add("job");
    tr.dataset.job = job.job_id;
    tr.classList.toggle("chosen", job.job_id === chosenJob);
    tr.addEventListener("click", () => openJob(job.job_id));
  });
  document.getElementById("jobs").replaceChildren(jobTable);
  const reasons = Object.entries(dead.by_reason).map(([reason, count]) => ({reason, count}));
  const deadBox = document.getElementById("dead");
  deadBox.replaceChildren(table([
    {title: "reason", get: d => d.reason}, {title: "count", num: true, get: d => d.count},
  ], reasons, "no dead letter"));
  if (dead.recent.length) deadBox.append(table([
    {title: "job", get: d => d.job_id || "\u2013"},
    {title: "routine", get: d => d.routine_id || "\u2013"},
    {title: "slot", get: d => d.slot || "\u2013"}, {title: "reason", get: d => d.reason},
  ], dead.recent, ""));
}

// -- one job's timeline: a lane per routine, a bar per handled message ----------------------
let chosenJob = null;

function msOf(iso) {
  // milliseconds since the epoch, keeping the microseconds Date.parse drops
  const micro = /\.\d{3}(\d{3})/.exec(iso);
  return Date.parse(iso) + (micro ? parseInt(micro[1], 10) / 1000 : 0);
}

function drawTimeline(job) {
  const steps = job.timeline;
  if (!steps.length) return el("p", {class: "empty"}, "no routine has handled this job yet");
  const t0 = msOf(job.created_at);
  const starts = steps.map(s => Math.max(0, msOf(s.started_at) - t0));
  const ends = steps.map((s, i) => starts[i] + s.duration_ms);
  const span = Math.max(0.001, ...ends);
  const lanes = [...new Set(steps.map(s => s.routine_id))];
  const left = 150, right = 90, width = 900, laneH = 24, top = 22;
  const height = top + lanes.length * laneH + 10;
  const scale = (width - left - right) / span;
  const root = svg("svg", {class: "timeline", width, height, viewBox: `0 0 ${width} ${height}`,
                           role: "img", "aria-label": "timeline of job " + job.job_id});
  root.append(svg("line", {class: "axis", x1: left, y1: top - 4, x2: width - right,
                           y2: top - 4}));
  root.append(svg("text", {class: "tick", x: left, y: top - 8}, "0 ms"));
  root.append(svg("text", {class: "tick", x: width - right, y: top - 8, "text-anchor": "end"},
                  ms(span) + " ms"));
  lanes.forEach((routine, i) => {
    root.append(svg("text", {class: "lane", x: 6, y: top + i * laneH + 16},
                    clip(routine, 20)));
  });
  steps.forEach((s, i) => {
    const lane = lanes.indexOf(s.routine_id);
    const x = left + starts[i] * scale;
    const w = Math.max(6, s.duration_ms * scale);  // a bar stays visible and clickable
    const bar = svg("rect", {class: s.outcome === "ok" ? "ok" : "raised", x, width: w,
                             y: top + lane * laneH + 4, height: laneH - 8, rx: 2,
                             "data-routine": s.routine_id, "data-step": i});
    bar.append(svg("title", {}, `${s.routine_id}: ${ms(s.duration_ms)} ms, ${s.outcome}`));
    root.append(bar);
    // a label after the bar, unless the lane's next bar starts too close to it
    const next = steps.findIndex((t, k) => k > i && t.routine_id === s.routine_id);
    if (next < 0 || left + starts[next] * scale - (x + w) > 70) {
      root.append(svg("text", {class: "tick", x: Math.min(x + w + 4, width - right + 4),
                               y: top + lane * laneH + 16}, ms(s.duration_ms) + " ms"));
    }
  });
  return root;
}

function showJob(job) {
  document.getElementById("timeline-box").hidden = false;
  document.getElementById("timeline-job").textContent = job.job_id;
  const facts = [["status", job.status], ["flow", job.flow_id], ["worker", job.worker_id],
                 ["steps", job.timeline.length], ["ms", ms(job.duration_ms)]];
  if (job.error) facts.push(["error", job.error]);
  document.getElementById("timeline-facts").replaceChildren(...facts.map(([k, v]) =>
    el("span", {"data-fact": k}, [k + " ", el("b", {}, String(v))])));
  const steps = table([
    {title: "#", num: true, get: s => job.timeline.indexOf(s) + 1},
    {title: "routine", get: s => s.routine_id},
    {title: "started", get: s => s.started_at.slice(11, 26)},
    {title: "ms", num: true, get: s => ms(s.duration_ms)},
    {title: "outcome", get: s => badge(s.outcome, s.outcome === "ok" ? "completed" : "failed")},
  ], job.timeline, "");
  document.getElementById("timeline").replaceChildren(drawTimeline(job), steps);
}

async function openJob(jobId) {
  chosenJob = jobId;
  for (const tr of document.querySelectorAll("tr.job")) {
    tr.classList.toggle("chosen", tr.dataset.job === jobId);
  }
  const response = await fetch("api/jobs/" + encodeURIComponent(jobId), {cache: "no-store"});
  if (!response.ok) {
    document.getElementById("timeline").replaceChildren(
      el("p", {class: "empty"}, "job " + jobId + ": HTTP " + response.status));
    return;
  }
  const job = await response.json();
  if (chosenJob === jobId) showJob(job);
}

document.getElementById("timeline-close").addEventListener("click", () => {
  chosenJob = null;
  document.getElementById("timeline-box").hidden = true;
  for (const tr of document.querySelectorAll("tr.job.chosen")) tr.classList.remove("chosen");
});

// -- live updates: server-sent events -------------------------------------------------------
function show(snapshot) {
  const j = snapshot.metrics.jobs;
  for (const [id, value] of [["active", j.active], ["completed", j.completed],
      ["failed", j.failed], ["cancelled", j.cancelled],
      ["dead", snapshot.metrics.dead_letters.total], ["workers", snapshot.workers.length]]) {
    document.getElementById("stat-" + id).textContent = value;
  }
  showFlows(snapshot.flows);
  showRoutineCounts(snapshot.metrics, snapshot.flows);
  showTables(snapshot);
  document.getElementById("dot").className = "dot live";
  document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
  document.body.dataset.snapshot = snapshot.number;
  if (chosenJob !== null) openJob(chosenJob);
}

const events = new EventSource("api/events");
events.addEventListener("snapshot", message => {
  const snapshot = JSON.parse(message.data);
  snapshot.number = message.lastEventId;
  show(snapshot);
});
events.addEventListener("error", () => {
  document.getElementById("dot").className = "dot down";
  document.getElementById("updated").textContent =
    events.readyState === EventSource.CLOSED ? "stream closed" : "reconnecting\u2026";
});
