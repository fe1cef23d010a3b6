// shoal dashboard: live overview from server-sent events, a paged jobs table, one job.
// Every value from the queue goes in with textContent (never as HTML).
"use strict";
(function () {
  const token = document.querySelector('meta[name="shoal-token"]').content;
  const readOnly = document.querySelector('meta[name="shoal-read-only"]').content === "1";
  const STATES = ["waiting", "pending", "running", "done", "failed", "cancelled"];
  const PAGE = 50;
  const $ = (id) => document.getElementById(id);
  const view = { state: "", search: "", page: 0, total: 0, job: null, counts: "", failed: null };

  async function getJSON(path) {
    const r = await fetch(path, { headers: { "X-Shoal-Token": token }, cache: "no-store" });
    const data = await r.json();
    if (!r.ok) throw new Error(data.error || r.statusText);
    return data;
  }

  async function post(path) {
    const r = await fetch(path, { method: "POST", headers: { "X-Shoal-Token": token } });
    const data = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(data.error || (await r.text()) || r.statusText);
    return data;
  }

  function cell(tr, text, cls) {
    const td = document.createElement("td");
    td.textContent = text === null || text === undefined ? "" : String(text);
    if (cls) td.className = cls;
    tr.appendChild(td);
    return td;
  }

  function seconds(s) {
    if (s === null || s === undefined) return "–";
    if (s < 60) return s.toFixed(s < 10 ? 1 : 0) + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + Math.round(s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.round((s % 3600) / 60) + " min";
  }

  const samples = [];  // [seconds, jobs ended] per event, the last RATE_KEPT
  const RATE_KEPT = 300;

  function drawRate(o) {
    const ended = o.counts.done + o.counts.failed + o.counts.cancelled;
    samples.push([performance.now() / 1000, ended]);
    if (samples.length > RATE_KEPT) samples.shift();
    const canvas = $("rate-chart");
    const width = canvas.clientWidth, height = 40, ratio = window.devicePixelRatio || 1;
    canvas.width = width * ratio; canvas.height = height * ratio;
    const ctx = canvas.getContext("2d");
    ctx.scale(ratio, ratio);
    const rates = [];
    for (let i = 1; i < samples.length; i++) {
      const dt = samples[i][0] - samples[i - 1][0];
      rates.push(dt > 0 ? Math.max(0, samples[i][1] - samples[i - 1][1]) / dt : 0);
    }
    if (!rates.length) return;
    const top = Math.max(...rates) || 1, step = width / RATE_KEPT;
    ctx.fillStyle = getComputedStyle(document.documentElement).getPropertyValue("--done");
    rates.forEach((r, i) => {
      const h = (height - 2) * r / top;
      ctx.fillRect(width - (rates.length - i) * step, height - h, Math.max(1, step - 0.5), h);
    });
  }

  function showOverview(o) {
    drawRate(o);
    $("queue-url").textContent = o.queue;
    for (const st of STATES) $("count-" + st).textContent = o.counts[st];
    $("total").textContent = o.total;
    $("rate").textContent = o.rate ? o.rate.toFixed(2) : "0";
    $("eta").textContent = o.eta_s ? seconds(o.eta_s) : "–";
    $("workers-alive").textContent = o.workers_alive;
    const bar = $("bar");
    bar.replaceChildren();
    for (const st of STATES) {
      if (!o.total || !o.counts[st]) continue;
      const s = document.createElement("span");
      s.style.width = (100 * o.counts[st] / o.total) + "%";
      s.style.background = "var(--" + st + ")";
      bar.appendChild(s);
    }
    const rows = $("worker-rows");
    rows.replaceChildren();
    for (const w of o.workers) {
      const tr = document.createElement("tr");
      cell(tr, w.id); cell(tr, w.host); cell(tr, w.slots); cell(tr, w.running);
      cell(tr, w.done); cell(tr, w.age_s === null ? "–" : seconds(w.age_s) + " ago");
      cell(tr, w.state);
      const td = cell(tr, "");
      if (!readOnly && !["lost", "stopped", "draining"].includes(w.state)) {
        const stop = document.createElement("button");
        stop.type = "button"; stop.textContent = "Stop"; stop.title = "finish its jobs, then exit";
        stop.addEventListener("click", () => stopWorker(w.id, stop));
        td.appendChild(stop);
      }
      rows.appendChild(tr);
    }
    if (o.counts.failed !== view.failed) { view.failed = o.counts.failed; loadFailures(); }
    const key = JSON.stringify(o.counts);
    if (key !== view.counts) {  // something moved: the table and the open job too
      view.counts = key;
      loadJobs();
      if (view.job) loadJob(view.job);
    }
  }

  async function loadFailures() {
    let data;
    try { data = await getJSON("/api/failures"); } catch (e) { return; }
    const rows = $("failure-rows");
    rows.replaceChildren();
    for (const f of data.failures) {
      const tr = document.createElement("tr");
      cell(tr, f.count); cell(tr, f.reason); cell(tr, f.jobs.join(", "));
      rows.appendChild(tr);
    }
    $("failures").hidden = data.failures.length === 0;
  }

  async function stopWorker(id, button) {
    button.disabled = true;
    try {
      await post("/api/workers/" + encodeURIComponent(id) + "/stop");
      $("worker-message").textContent = "asked " + id + " to stop";
    } catch (e) { $("worker-message").textContent = "stop refused: " + e.message; }
  }

  async function loadJobs() {
    const q = "/api/jobs?page=" + view.page + "&size=" + PAGE +
      (view.state ? "&state=" + encodeURIComponent(view.state) : "") +
      (view.search ? "&q=" + encodeURIComponent(view.search) : "");
    let data;
    try { data = await getJSON(q); } catch (e) { $("page-info").textContent = e.message; return; }
    view.total = data.total;
    const rows = $("job-rows");
    rows.replaceChildren();
    for (const j of data.rows) {
      const tr = document.createElement("tr");
      tr.className = "job";
      tr.dataset.id = j.id;
      cell(tr, j.seq); cell(tr, j.name || j.id); cell(tr, j.state, "st " + j.state);
      cell(tr, j.attempt); cell(tr, j.exit_code); cell(tr, j.reason); cell(tr, j.worker);
      tr.addEventListener("click", () => openJob(j.id));
      rows.appendChild(tr);
    }
    const first = data.total ? view.page * PAGE + 1 : 0;
    const last = Math.min(data.total, (view.page + 1) * PAGE);
    $("page-info").textContent = first + "–" + last + " of " + data.total;
    $("prev").disabled = view.page === 0;
    $("next").disabled = last >= data.total;
  }

  async function loadJob(id) {
    let j;
    try { j = await getJSON("/api/jobs/" + encodeURIComponent(id)); }
    catch (e) { $("job-message").textContent = e.message; return; }
    if (view.job !== id) return;
    $("job-title").textContent = "#" + j.seq + " " + (j.name || j.id);
    $("job-state").textContent = j.state;
    $("job-attempt").textContent = j.attempt;
    $("job-command").textContent = j.command;
    const params = Object.entries(j.params).map(([k, v]) => k + "=" + v).join("  ");
    $("job-params").textContent = params || "–";
    $("job-reason").textContent = j.reason || "–";
    $("job-cancel").disabled = readOnly || j.final;
    $("job-retry").disabled = readOnly || !(j.state === "failed" || j.state === "cancelled");
    const rows = $("attempt-rows");
    rows.replaceChildren();
    for (const a of j.attempts) {
      const tr = document.createElement("tr");
      cell(tr, a.attempt); cell(tr, a.state, "st " + a.state); cell(tr, a.exit_code);
      cell(tr, a.reason); cell(tr, a.host); cell(tr, a.worker);
      cell(tr, a.started && a.ended ? seconds(a.ended - a.started) : "–");
      rows.appendChild(tr);
    }
    const log = $("job-log");
    const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    log.textContent = j.log || "(no log yet)";
    if (atEnd) log.scrollTop = log.scrollHeight;
  }

  function openJob(id) {
    view.job = id;
    $("job-message").textContent = "";
    $("job").hidden = false;
    loadJob(id);
  }

  async function act(action) {
    if (!view.job) return;
    try {
      const r = await post("/api/jobs/" + encodeURIComponent(view.job) + "/" + action);
      $("job-message").textContent = r.changed.length ? action + " done" : "nothing to " + action;
    } catch (e) { $("job-message").textContent = action + " refused: " + e.message; }
    loadJob(view.job);
    loadJobs();
  }

  const LANE = 12;  // px per lane of the timeline
  let drawn = null;  // the timeline last drawn, for clicks

  async function drawTimeline() {
    let t;
    try { t = await getJSON("/api/timeline"); }
    catch (e) { $("timeline-info").textContent = e.message; return; }
    const canvas = $("timeline-canvas");
    const width = canvas.clientWidth || canvas.parentElement.clientWidth;
    const ratio = window.devicePixelRatio || 1;
    canvas.style.height = (t.lanes.length * LANE) + "px";
    canvas.width = width * ratio;
    canvas.height = Math.max(1, t.lanes.length * LANE) * ratio;
    const ctx = canvas.getContext("2d");
    ctx.scale(ratio, ratio);
    const colors = {};
    const css = getComputedStyle(document.documentElement);
    for (const st of STATES) colors[st] = css.getPropertyValue("--" + st).trim();
    const scale = t.span > 0 ? width / t.span : 0;
    for (const [lane, start, end, state] of t.bars) {
      ctx.fillStyle = colors[state] || "#888";
      ctx.fillRect(start * scale, lane * LANE + 1, Math.max(1, (end - start) * scale - 0.5), LANE - 2);
    }
    drawn = { t: t, scale: scale };
    $("timeline-info").textContent = t.bars.length + " jobs on " + t.lanes.length +
      " lanes over " + seconds(t.span);
  }

  function timelineClick(ev) {
    if (!drawn) return;
    const rect = ev.target.getBoundingClientRect();
    const x = ev.clientX - rect.left, lane = Math.floor((ev.clientY - rect.top) / LANE);
    for (const bar of drawn.t.bars) {
      if (bar[0] === lane && bar[1] * drawn.scale <= x + 1 && x - 1 <= bar[2] * drawn.scale) {
        openJob(bar[5]);
        return;
      }
    }
  }

  function live() {
    const source = new EventSource("/api/events");
    source.addEventListener("overview", (ev) => {
      $("live").textContent = "live"; $("live").className = "badge on";
      showOverview(JSON.parse(ev.data));
    });
    source.addEventListener("trouble", (ev) => {
      $("live").textContent = "queue: " + JSON.parse(ev.data).error; $("live").className = "badge off";
    });
    source.onerror = () => { $("live").textContent = "reconnecting"; $("live").className = "badge off"; };
  }

  // The cookie holds the token now: take it out of the address bar (and of its history).
  if (new URLSearchParams(location.search).has("token")) history.replaceState(null, "", "/");
  $("read-only").hidden = !readOnly;
  $("state-filter").addEventListener("change", (e) => { view.state = e.target.value; view.page = 0; loadJobs(); });
  let typing = null;
  $("search").addEventListener("input", (e) => {
    clearTimeout(typing);
    typing = setTimeout(() => { view.search = e.target.value.trim(); view.page = 0; loadJobs(); }, 300);
  });
  $("prev").addEventListener("click", () => { if (view.page > 0) { view.page--; loadJobs(); } });
  $("next").addEventListener("click", () => { view.page++; loadJobs(); });
  $("job-close").addEventListener("click", () => { view.job = null; $("job").hidden = true; });
  $("timeline-draw").addEventListener("click", drawTimeline);
  $("timeline-canvas").addEventListener("click", timelineClick);
  $("job-cancel").addEventListener("click", () => act("cancel"));
  $("job-retry").addEventListener("click", () => act("retry"));
  setInterval(() => { if (view.job) loadJob(view.job); }, 2000);  // a running job's log grows
  loadJobs();
  live();
})();
