// rayrag's page: the API's own routes, called with the key the user pasted.
// Server text only ever reaches the page through textContent / text nodes (never as markup),
// and the key lives in this tab's sessionStorage only.

const KEY_SLOT = "rayrag.apiKey";
const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const REDACTION_MARK = /(<[A-Z][A-Z_]*>|\[\d+\])/;

let citations = new Map(); // marker -> citation as the response gave it
let lastRequestId = "";
let rating = "";
let lastQuestion = "";

// -- DOM helpers -----------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  node.append(...children.map((c) => (c instanceof Node ? c : String(c))));
  return node;
}

function svg(tag, attrs = {}, text = null) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  if (text !== null) node.textContent = text;
  return node;
}

function clear(node, placeholder = null) {
  node.replaceChildren();
  if (placeholder) node.append(el("span", { class: "muted" }, placeholder));
}

const fmt = (x, digits = 2) => (typeof x === "number" ? x.toFixed(digits) : "-");

// -- the key and the API -------------------------------------------------------------------

const key = () => sessionStorage.getItem(KEY_SLOT) || "";

async function api(method, path, body = undefined) {
  const headers = { Authorization: `Bearer ${key()}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "omit",
    cache: "no-store",
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(`${status} ${error.type || "error"}: ${error.message || "request failed"}`);
    this.status = status;
    this.requestId = error.request_id || "";
  }
}

function showError(error) {
  $("error-card").hidden = false;
  $("error").textContent = error.requestId
    ? `${error.message} (request ${error.requestId})`
    : error.message;
}

async function useKey(value) {
  if (value) sessionStorage.setItem(KEY_SLOT, value);
  $("api-key").value = "";
  const state = $("key-state");
  if (!key()) {
    state.textContent = "no key";
    $("tab-admin").hidden = true;
    showView("ask");
    return;
  }
  // An admin key may read /v1/admin/governance; a user key gets a 403 (and no admin tab).
  try {
    await api("GET", "/v1/admin/governance");
    state.textContent = "admin key";
    $("tab-admin").hidden = false;
  } catch (error) {
    state.textContent = error.status === 401 ? "key refused" : "user key";
    $("tab-admin").hidden = true;
    showView("ask");
  }
}

function showView(name) {
  for (const view of ["ask", "admin"]) {
    $(`view-${view}`).hidden = view !== name;
    $(`tab-${view}`).classList.toggle("active", view === name);
  }
  if (name === "admin") loadAdmin();
}

// -- asking: SSE over fetch (EventSource cannot POST or send a header) ---------------------

async function ask(event) {
  event.preventDefault();
  const question = $("question").value.trim();
  if (!question) return;
  resetAnswer();
  lastQuestion = question;
  $("ask-button").disabled = true;
  $("ask-state").textContent = "retrieving...";
  const body = { question, stream: true };
  if ($("mode").value) body.mode = $("mode").value;
  try {
    const response = await fetch("/v1/ask", {
      method: "POST",
      headers: {
        Authorization: `Bearer ${key()}`,
        "Content-Type": "application/json",
        Accept: "text/event-stream",
      },
      body: JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
    });
    if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => ({})));
    await readEvents(response.body, onEvent);
  } catch (error) {
    showError(error);
  } finally {
    $("ask-button").disabled = false;
    $("ask-state").textContent = "";
  }
}

async function readEvents(stream, handle) {
  const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let kind = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) kind = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
      }
      if (data.length) handle(kind, JSON.parse(data.join("\n")));
    }
  }
}

function onEvent(kind, data) {
  if (kind === "meta") {
    lastRequestId = data.request_id || "";
    $("request-id").textContent = lastRequestId;
    $("answer-card").hidden = false;
    $("ask-state").textContent = "generating...";
    showCitations(data.citations || []);
  } else if (kind === "delta") {
    $("answer").append(data.text);
  } else if (kind === "done") {
    showResponse(data);
  } else if (kind === "error") {
    throw new ApiError(500, data);
  }
}

function resetAnswer() {
  for (const id of ["answer-card", "error-card", "passage-card", "feedback"]) $(id).hidden = true;
  clear($("answer"));
  clear($("badges"));
  clear($("reasons"));
  $("request-id").textContent = "";
  $("feedback-state").textContent = "";
  $("feedback-comment").value = "";
  setRating("");
  citations = new Map();
}

// -- the answer and what vouches for it ----------------------------------------------------

function showResponse(response) {
  lastRequestId = response.request_id || lastRequestId;
  $("request-id").textContent = lastRequestId;
  $("answer-card").hidden = false;
  renderAnswer(response.answer || "");
  showCitations(response.citations || [], new Set(response.cited_markers || []));
  showBadges(response);
  showFacts(response.facts || [], lastQuestion, response.answer || "");
  showTimings(response.timings_ms || {});
  showExperts((response.routing && response.routing.expert_share) || []);
  $("feedback").hidden = !lastRequestId;
}

function renderAnswer(text) {
  // The final answer is authoritative: markers become buttons, redaction marks are tagged.
  const answer = $("answer");
  clear(answer);
  for (const part of text.split(REDACTION_MARK)) {
    if (!part) continue;
    const cite = part.match(/^\[(\d+)\]$/);
    if (cite && citations.has(Number(cite[1]))) {
      answer.append(
        el("button", { type: "button", class: "cite", onclick: () => openPassage(Number(cite[1])) }, part),
      );
    } else if (/^<[A-Z][A-Z_]*>$/.test(part)) {
      answer.append(el("mark", { class: "redacted", title: "redacted" }, part));
    } else {
      answer.append(part);
    }
  }
}

function showCitations(list, cited = new Set()) {
  citations = new Map(list.map((c) => [c.marker, c]));
  const box = $("citations");
  clear(box);
  if (!list.length) box.append(el("li", { class: "muted" }, "no passages"));
  for (const c of list) {
    box.append(
      el(
        "li",
        { class: cited.has(c.marker) ? "cited" : "" },
        el(
          "button",
          { type: "button", class: "link", "data-marker": c.marker, onclick: () => openPassage(c.marker) },
          `[${c.marker}] ${c.title || c.doc_id}${c.page != null ? ` p. ${c.page}` : ""}`,
        ),
        el("span", { class: "muted mono" }, ` ${c.doc_id}${c.section ? ` - ${c.section}` : ""} - score ${fmt(c.score, 3)}`),
      ),
    );
  }
}

function openPassage(marker) {
  const c = citations.get(marker);
  if (!c) return;
  $("passage-card").hidden = false;
  $("passage-marker").textContent = `[${marker}]`;
  $("passage-title").textContent = c.title || "(untitled)";
  $("passage-doc").textContent =
    c.doc_id + (c.page != null ? ` - p. ${c.page}` : "") + (c.section ? ` - ${c.section}` : "");
  $("passage-chunk").textContent = c.chunk_id;
  $("passage-score").textContent = fmt(c.score, 4);
  const text = $("passage-text");
  clear(text);
  for (const part of (c.text || "").split(/(<[A-Z][A-Z_]*>)/)) {
    if (/^<[A-Z][A-Z_]*>$/.test(part)) text.append(el("mark", { class: "redacted", title: "redacted at ingest" }, part));
    else if (part) text.append(part);
  }
  $("passage-card").scrollIntoView({ block: "nearest" });
}

function badge(label, value, tone = "") {
  return el("span", { class: `pill ${tone}` }, el("b", {}, label), ` ${value}`);
}

function showBadges(r) {
  const box = $("badges");
  clear(box);
  const conf = r.confidence ?? 0;
  box.append(badge("confidence", fmt(conf), conf >= 0.5 ? "good" : "warn"));
  box.append(badge("groundedness", fmt(r.groundedness ?? 0)));
  if (r.escalated) box.append(badge("escalated", "to a reviewer", "warn"));
  if (r.refused) box.append(badge("refused", (r.safety?.categories || []).join(", ") || "flagged", "bad"));
  if (r.cached) box.append(badge("cached", "yes"));
  const red = r.redactions || {};
  for (const side of ["question", "answer"]) {
    const counts = Object.entries(red[side] || {});
    const total = counts.reduce((n, [, k]) => n + k, 0);
    const detail = counts.map(([type, k]) => `${type} ${k}`).join(", ");
    box.append(badge(`redacted in ${side}`, total ? `${total} (${detail})` : "0", total ? "info" : ""));
  }
  const v = r.validation || {};
  if (v.checked) {
    box.append(badge("claims", `${v.supported} supported, ${v.unknown} unknown, ${v.contradicted} contradicted`));
  }
  if (r.safety?.flagged_chunks) box.append(badge("withheld passages", r.safety.flagged_chunks, "warn"));
  const reasons = r.reasons || [];
  $("reasons").textContent = reasons.length ? `reasons: ${reasons.join(", ")}` : "";
}

// -- the KG facts as a small graph ---------------------------------------------------------

function pathEdges(facts, question, answer) {
  // The path that answered: the fewest facts joining an entity the question names to one the
  // answer names (both ways along a relation), e.g. X <-acquire- C -make-> Y for "which product
  // is made by the company that acquired X?". Indices of the facts on it; empty when none.
  const named = (text) => {
    const lower = (text || "").toLowerCase();
    return new Set(
      facts.flatMap((f) => [f.subject, f.object]).filter((n) => n && lower.includes(n.toLowerCase())),
    );
  };
  const starts = named(question);
  const goals = named(answer);
  const via = new Map([...starts].map((n) => [n, null])); // entity -> [previous, fact index]
  const queue = [...starts];
  while (queue.length) {
    const here = queue.shift();
    if (goals.has(here) && !starts.has(here)) {
      const onPath = new Set();
      for (let step = via.get(here); step; step = via.get(step[0])) onPath.add(step[1]);
      return onPath;
    }
    facts.forEach((f, i) => {
      const next = f.subject === here ? f.object : f.object === here ? f.subject : null;
      if (next !== null && !via.has(next)) {
        via.set(next, [here, i]);
        queue.push(next);
      }
    });
  }
  return new Set();
}

function showFacts(facts, question = "", answer = "") {
  const box = $("graph");
  const list = $("facts");
  clear(box, facts.length ? null : "no facts for this answer");
  clear(list);
  if (!facts.length) return;
  const shown = facts.slice(0, 12);
  const onPath = pathEdges(shown, question, answer);
  const names = [...new Set(shown.flatMap((f) => [f.subject, f.object]))];
  // Entities on an ellipse, labels beside their node (outward), so long names do not collide.
  const width = 560;
  const height = Math.max(200, 70 + 24 * names.length);
  const cx = width / 2;
  const cy = height / 2;
  const rx = cx - 150;
  const ry = cy - 40;
  const at = new Map(
    names.map((n, i) => {
      const angle = (2 * Math.PI * i) / names.length - Math.PI / 2;
      return [n, [cx + rx * Math.cos(angle), cy + ry * Math.sin(angle)]];
    }),
  );
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "fact graph" });
  const defs = svg("defs");
  for (const [id, color] of [["arrow", "#8a94a6"], ["arrow-path", "#d9480f"]]) {
    const marker = svg("marker", { id, viewBox: "0 0 10 10", refX: 20, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto" });
    marker.append(svg("path", { d: "M0,0 L10,5 L0,10 z", fill: color }));
    defs.append(marker);
  }
  root.append(defs);
  shown.forEach((f, i) => {
    const [x1, y1] = at.get(f.subject);
    const [x2, y2] = at.get(f.object);
    const path = onPath.has(i);
    root.append(
      svg("line", {
        x1, y1, x2, y2,
        class: path ? "edge path" : "edge",
        "marker-end": `url(#${path ? "arrow-path" : "arrow"})`,
      }),
    );
    root.append(svg("text", { x: 0.42 * x1 + 0.58 * x2, y: 0.42 * y1 + 0.58 * y2 - 4, class: path ? "edge-label on-path" : "edge-label" }, f.relation));
  });
  for (const [name, [x, y]] of at) {
    const group = svg("g", { class: "node" });
    group.append(svg("circle", { cx: x, cy: y, r: 9 }));
    const side = x > cx + 1 ? "start" : x < cx - 1 ? "end" : "middle";
    const dx = side === "start" ? 14 : side === "end" ? -14 : 0;
    const dy = side === "middle" ? (y < cy ? -14 : 24) : 4;
    const label = name.length > 30 ? `${name.slice(0, 29)}...` : name;
    group.append(svg("text", { x: x + dx, y: y + dy, class: "node-label", "text-anchor": side }, label));
    root.append(group);
  }
  box.append(root);
  shown.forEach((f, i) =>
    list.append(
      el(
        "li",
        { class: onPath.has(i) ? "on-path" : "" },
        `${f.subject} `,
        el("b", {}, f.relation),
        ` ${f.object}`,
        el("span", { class: "muted mono" }, ` ${fmt(f.confidence)} - ${(f.doc_ids || []).join(", ")}`),
      ),
    ),
  );
}

// -- timings and expert load ---------------------------------------------------------------

function showTimings(timings) {
  const box = $("timings");
  const entries = Object.entries(timings).filter(([, ms]) => typeof ms === "number");
  clear(box, entries.length ? null : "no timings");
  const longest = Math.max(1, ...entries.map(([, ms]) => ms));
  for (const [stage, ms] of entries) {
    const bar = el("span", { class: "bar-fill" });
    bar.style.width = `${(100 * ms) / longest}%`;
    box.append(el("div", { class: "bar" }, el("span", { class: "bar-label" }, stage), el("span", { class: "bar-track" }, bar), el("span", { class: "mono bar-value" }, fmt(ms, 1))));
  }
}

function showExperts(layers) {
  const box = $("experts");
  clear(box, layers.length ? null : "no routing (refused or cached)");
  if (!layers.length) return;
  const n = Math.max(...layers.map((l) => l.length));
  const table = el("table", { class: "heat" });
  const head = el("tr", {}, el("th", {}, "layer"));
  for (let e = 0; e < n; e += 1) head.append(el("th", {}, `e${e}`));
  table.append(head);
  layers.forEach((shares, layer) => {
    const row = el("tr", {}, el("th", {}, String(layer)));
    for (const share of shares) {
      const cell = el("td", { title: `${fmt(share * 100, 1)}%` }, fmt(share * 100, 0));
      cell.style.background = `rgba(217, 72, 15, ${Math.min(1, share * 2).toFixed(3)})`;
      row.append(cell);
    }
    table.append(row);
  });
  box.append(table, el("div", { class: "muted" }, "share of routed tokens, % (uniform = 100 / experts)"));
}

// -- feedback ------------------------------------------------------------------------------

function setRating(value) {
  rating = value;
  $("thumb-up").classList.toggle("chosen", value === "up");
  $("thumb-down").classList.toggle("chosen", value === "down");
}

async function sendFeedback() {
  if (!rating) {
    $("feedback-state").textContent = "choose thumbs up or down";
    return;
  }
  const body = { request_id: lastRequestId, rating };
  const comment = $("feedback-comment").value.trim();
  if (comment) body.comment = comment.slice(0, 2000);
  try {
    const reply = await api("POST", "/v1/feedback", body);
    $("feedback-state").textContent = reply.recorded ? "thank you: recorded" : "not recorded";
  } catch (error) {
    $("feedback-state").textContent = error.message;
  }
}

// -- admin ---------------------------------------------------------------------------------

async function loadAdmin() {
  await Promise.all([loadEscalations(), loadRegistry(), loadReadiness(), loadGovernance()]);
}

async function guarded(box, load) {
  try {
    await load();
  } catch (error) {
    clear(box);
    box.append(el("span", { class: "muted" }, error.message));
  }
}

async function loadEscalations() {
  const body = $("escalations").tBodies[0];
  await guarded(body, async () => {
    const { records } = await api("GET", "/v1/admin/escalations");
    clear(body);
    body.append(el("tr", {}, ...["request id", "reasons", "confidence", "chunks", "state"].map((h) => el("th", {}, h))));
    if (!records.length) body.append(el("tr", {}, el("td", { colspan: 5, class: "muted" }, "the queue is empty")));
    for (const r of [...records].reverse().slice(0, 50)) {
      const state = r.resolved
        ? el("span", { class: "pill good" }, r.resolved.resolution)
        : el("button", { type: "button", class: "resolve", onclick: () => resolve(r.request_id) }, "resolve");
      body.append(
        el(
          "tr",
          {},
          el("td", { class: "mono" }, el("button", { type: "button", class: "link mono", onclick: () => lookupEvents(r.request_id) }, r.request_id)),
          el("td", {}, (r.reasons || []).join(", ")),
          el("td", { class: "mono" }, fmt(r.confidence)),
          el("td", { class: "mono" }, (r.chunk_ids || []).length),
          el("td", {}, state),
        ),
      );
    }
  });
}

async function resolve(requestId) {
  try {
    await api("POST", `/v1/admin/escalations/${encodeURIComponent(requestId)}/resolve`, { resolution: "resolved" });
  } catch (error) {
    showAdminNote(error.message);
  }
  await loadEscalations();
}

function showAdminNote(text) {
  $("alias-state").textContent = text;
}

async function lookupEvents(requestId) {
  $("events-rid").value = requestId;
  const box = $("events");
  try {
    const { events } = await api("GET", `/v1/admin/events?request_id=${encodeURIComponent(requestId)}`);
    box.textContent = events.length ? events.map((e) => JSON.stringify(e)).join("\n") : "no events for this request id";
  } catch (error) {
    box.textContent = error.message;
  }
}

async function loadRegistry() {
  const box = $("registry");
  await guarded(box, async () => {
    const reg = await api("GET", "/v1/admin/registry");
    clear(box);
    const aliases = reg.aliases || {};
    box.append(
      el("div", {}, el("b", {}, "model "), el("span", { class: "mono" }, reg.model)),
      el("div", {}, badge("champion", aliases.champion ?? "none", "good"), " ", badge("challenger", aliases.challenger ?? "none", "info")),
      el("div", { class: "muted" }, `versions: ${(reg.versions || []).join(", ") || "none"}`),
    );
  });
}

async function moveAlias(event) {
  event.preventDefault();
  const version = Number($("alias-version").value);
  const alias = $("alias-name").value;
  try {
    const moved = await api("POST", "/v1/admin/registry/alias", { alias, version });
    $("alias-state").textContent = `${moved.alias}: v${moved.previous ?? "none"} -> v${moved.version} (audited, request ${moved.request_id})`;
  } catch (error) {
    $("alias-state").textContent = error.message;
  }
  await loadRegistry();
}

async function loadReadiness() {
  const box = $("readiness");
  await guarded(box, async () => {
    const { report } = await api("GET", "/v1/admin/readiness");
    clear(box);
    const when = report.ts ? new Date(report.ts * 1000).toISOString() : report.file;
    box.append(el("div", {}, badge("passed", `${report.passed}/${report.total}`, report.passed === report.total ? "good" : "warn"), el("span", { class: "muted" }, ` ${when}`)));
    const table = el("table", { class: "table" });
    for (const c of report.checks || []) {
      table.append(el("tr", {}, el("td", {}, c.passed ? "pass" : "FAIL"), el("td", {}, c.area), el("td", { class: "mono" }, c.name)));
    }
    box.append(table);
  });
}

async function loadGovernance() {
  const box = $("governance");
  await guarded(box, async () => {
    const gov = await api("GET", "/v1/admin/governance");
    clear(box);
    const rows = [
      ["bundle", gov.bundle_id],
      ["model", gov.model_version],
      ["prompt", gov.prompt_version],
      ["config", gov.config_hash],
      ["redaction", gov.redaction?.enabled ? (gov.redaction.entities || []).join(", ") : "off"],
      ["escalate below", gov.guard?.confidence_threshold],
      ["answer cache", `${gov.answer_cache_entries}/${gov.answer_cache_size}`],
    ];
    for (const [name, value] of rows) box.append(el("dt", {}, name), el("dd", { class: "mono" }, value ?? "-"));
  });
}

// -- document upload (POST /v1/admin/documents, then poll the ingest job) -------------------

const UPLOAD_POLL_MS = 1000;
const UPLOAD_DONE = new Set(["succeeded", "failed"]);

async function uploadDocuments(event) {
  event.preventDefault();
  const files = $("upload-file").files;
  const box = $("upload-state");
  if (!files.length) {
    box.textContent = "choose one or more files first";
    return;
  }
  const form = new FormData();
  for (const file of files) form.append("files", file, file.name);
  const acl = $("upload-acl").value.trim();
  if (acl) form.append("acl", acl);
  $("upload-button").disabled = true;
  box.textContent = `uploading ${files.length} file(s)...`;
  try {
    // no Content-Type header: the browser writes the multipart boundary itself
    const response = await fetch("/v1/admin/documents", {
      method: "POST",
      headers: { Authorization: `Bearer ${key()}` },
      body: form,
      credentials: "omit",
      cache: "no-store",
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new ApiError(response.status, data);
    $("upload-file").value = "";
    await pollIngest(data.status_url);
  } catch (error) {
    box.textContent = error.message;
  } finally {
    $("upload-button").disabled = false;
  }
}

async function pollIngest(statusUrl) {
  for (;;) {
    const job = await api("GET", statusUrl);
    showIngest(job);
    if (UPLOAD_DONE.has(job.state)) {
      if (job.state === "succeeded") loadGovernance(); // the new bundle id
      return job;
    }
    await new Promise((done) => setTimeout(done, UPLOAD_POLL_MS));
  }
}

function showIngest(job) {
  const box = $("upload-state");
  clear(box);
  const tone = { succeeded: "good", failed: "bad", running: "info" }[job.state] || "";
  box.append(el("div", {}, badge("ingest", job.state, tone), " ", el("span", { class: "mono" }, job.ingest_id)));
  const stages = job.stages || [];
  if (stages.length) box.append(el("div", { class: "muted" }, stages[stages.length - 1]));
  const counts = job.counts || {};
  if (job.state === "succeeded") {
    box.append(
      el("div", {}, `processed ${counts.processed}, reused ${counts.reused}, chunks ${counts.chunks}, quarantined ${counts.quarantined}`),
      el("div", { class: "muted" }, "bundle ", el("span", { class: "mono" }, job.bundle_id)),
    );
  }
  if (job.error) box.append(el("div", { class: "error" }, job.error));
  const quarantined = job.quarantined || [];
  if (quarantined.length) {
    const table = el("table", { class: "table" }, el("tr", {}, el("th", {}, "quarantined"), el("th", {}, "reason")));
    for (const q of quarantined) table.append(el("tr", {}, el("td", { class: "mono" }, q.doc_id || "-"), el("td", {}, q.reason)));
    box.append(table);
  }
}

// -- wiring --------------------------------------------------------------------------------

function start() {
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    useKey($("api-key").value.trim());
  });
  $("key-forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_SLOT);
    useKey("");
  });
  for (const tab of document.querySelectorAll(".tab")) {
    tab.addEventListener("click", () => showView(tab.dataset.view));
  }
  $("ask-form").addEventListener("submit", ask);
  $("thumb-up").addEventListener("click", () => setRating("up"));
  $("thumb-down").addEventListener("click", () => setRating("down"));
  $("feedback-send").addEventListener("click", sendFeedback);
  $("esc-refresh").addEventListener("click", loadEscalations);
  $("reg-refresh").addEventListener("click", loadRegistry);
  $("alias-form").addEventListener("submit", moveAlias);
  $("upload-form").addEventListener("submit", uploadDocuments);
  $("events-form").addEventListener("submit", (event) => {
    event.preventDefault();
    lookupEvents($("events-rid").value.trim());
  });
  useKey("");
}

start();
