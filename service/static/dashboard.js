// digitstream dashboard: plain JavaScript over the public HTTP API (no framework, no build step, no CDN).
//
// Drawing: the canvas is sent as a PNG to POST /predict/image, which makes it MNIST-like exactly as the
// service documents (invert, crop, fit 20x20, centre by mass), so the page predicts what any client would.
// Live panel: the page listens to GET /model/events (Server-Sent Events: snapshot, pin, drift, fault and
// health events) and reads GET /model when one arrives, plus every 5 s for the ages; if the event stream
// cannot be opened (an old proxy, too many streams: 503) it falls back to reading /model every second.
// /model/weights and /model/versions only when the version changed, /model/features (mlp rule: its hidden
// units) when it changed and at most every 5 s. Compare models: the chosen models' learning curves on one
// canvas, from GET /compare every 3 s (one request for them all).
"use strict";

(() => {
  const POLL_MS = 1000; // without the event stream
  const EVENTS_POLL_MS = 5000; // with it: to keep the ages current, and a bound on a missed event's delay
  const RECONNECT_MS = 5000; // after the event stream was refused or closed
  const EVENT_KINDS = ["hello", "snapshot", "pin", "drift", "fault", "health"];
  const PREDICT_EVERY_MS = 150; // while drawing: at most one request in flight, at most ~7 a second
  const VERSIONS_EVERY_MS = 5000;
  const FEATURES_EVERY_MS = 5000;
  const LIST_EVERY_MS = 15000; // the registry, for the model selector and the compare panel
  const FEATURE_COUNT = 42; // 6 or 7 full rows at the usual widths
  const KEY_STORAGE = "digitstream-api-key";
  const POSITIVE = [16, 64, 160]; // as GET /model/weights.png: blue = ink votes for the digit
  const NEGATIVE = [200, 32, 32]; // red = ink votes against it

  const $ = (id) => document.getElementById(id);
  // The model shown: "" is the service's default one (/model...); another is a registered model
  // (/models/{name}/...), chosen in the header's selector when the registry holds more than one.
  const shown = { name: "" };
  const modelPath = (suffix = "") => (shown.name ? "/models/" + encodeURIComponent(shown.name) : "/model") + suffix;
  const predictPath = (suffix) => (shown.name ? "/models/" + encodeURIComponent(shown.name) : "") + suffix;
  const state = {
    model: null,
    weightsVersion: null,
    weightsFetchedAt: -Infinity,
    featuresVersion: null,
    featuresFetchedAt: -Infinity,
    versionsFetchedAt: -Infinity,
    versionsForModel: null,
    confusionKey: null,
    prediction: null,
    feedbackSent: false,
    hasInk: false,
    drawing: false,
    last: null,
    generation: 0, // bumped by Clear: answers for an older drawing are dropped
    predictTimer: null,
    predictInFlight: false,
    predictAgain: false,
    lastPredictAt: 0,
    apiKey: readStoredKey(),
    pendingAction: null,
  };

  // ---- HTTP ------------------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, detail) {
      super(detail);
      this.status = status; // 0: the service did not answer at all
      this.detail = detail;
    }
  }

  async function api(path, { method = "GET", json, body, auth = false } = {}) {
    const headers = {};
    if (json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(json);
    }
    if (auth && state.apiKey) headers["X-API-Key"] = state.apiKey;
    let response;
    try {
      response = await fetch(path, { method, headers, body, cache: "no-store" });
    } catch (err) {
      throw new ApiError(0, "the service is unreachable (no answer from " + location.host + ")");
    }
    let data = null;
    try {
      const text = await response.text();
      data = text ? JSON.parse(text) : null;
    } catch (err) {
      data = null;
    }
    if (!response.ok) {
      const detail = data && typeof data.detail === "string" ? data.detail : "HTTP " + response.status;
      throw new ApiError(response.status, detail);
    }
    return data;
  }

  function describeError(err) {
    if (!(err instanceof ApiError)) return "unexpected error: " + err;
    if (err.status === 0) return "Cannot reach the service: is `digitstream serve` running? Retrying every second.";
    if (isNoModel(err)) return "No model yet: the worker has not written its first snapshot.";
    if (err.status === 503) return "The service cannot answer right now: " + err.detail;
    return err.detail + " (HTTP " + err.status + ")";
  }

  const isNoModel = (err) => err instanceof ApiError && err.status === 503 && /no model/i.test(err.detail);

  // ---- banner (errors in words, never a blank page) --------------------------------------------
  function setBanner(kind, text) {
    const banner = $("banner");
    document.body.dataset.state = kind || "ok";
    if (!text) {
      banner.hidden = true;
      banner.textContent = "";
      return;
    }
    banner.className = "banner " + (kind === "unreachable" || kind === "error" ? "error" : "warning");
    banner.textContent = text;
    banner.hidden = false;
  }

  // ---- API key (asked for only when the service answers 401/403) ------------------------------
  function readStoredKey() {
    try {
      return sessionStorage.getItem(KEY_STORAGE) || "";
    } catch (err) {
      return "";
    }
  }

  async function guarded(action, report) {
    try {
      await action();
    } catch (err) {
      if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
        askForKey(err.status === 403 ? "The API key was refused: enter the right one." :
          "This service needs an API key for this action.", action, report);
        report("Waiting for the API key…");
        return;
      }
      report(describeError(err));
    }
  }

  function askForKey(message, action, report) {
    state.pendingAction = { action, report };
    $("api-key-prompt").textContent = message;
    $("api-key-form").hidden = false;
    $("api-key").value = "";
    $("api-key").focus();
  }

  $("api-key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.apiKey = $("api-key").value.trim();
    try {
      sessionStorage.setItem(KEY_STORAGE, state.apiKey);
    } catch (err) { /* private mode: keep it in memory only */ }
    $("api-key-form").hidden = true;
    const pending = state.pendingAction;
    state.pendingAction = null;
    if (pending) guarded(pending.action, pending.report);
  });

  $("api-key-cancel").addEventListener("click", () => {
    $("api-key-form").hidden = true;
    if (state.pendingAction) state.pendingAction.report("Cancelled: no API key given.");
    state.pendingAction = null;
  });

  // ---- drawing ---------------------------------------------------------------------------------
  const pad = $("pad");
  const pen = pad.getContext("2d");

  function clearPad() {
    pen.fillStyle = "#ffffff";
    pen.fillRect(0, 0, pad.width, pad.height);
    state.hasInk = false;
    state.generation += 1;
    state.prediction = null;
    renderPrediction(null);
    $("prediction-note").textContent = "Draw a digit to get a prediction.";
    $("feedback-status").textContent = "";
  }

  function point(event) {
    const box = pad.getBoundingClientRect();
    return {
      x: ((event.clientX - box.left) * pad.width) / box.width,
      y: ((event.clientY - box.top) * pad.height) / box.height,
    };
  }

  function stroke(from, to) {
    pen.strokeStyle = "#000000";
    pen.fillStyle = "#000000";
    pen.lineWidth = pad.width / 13; // MNIST strokes are ~2 px of a 20 px digit box
    pen.lineCap = "round";
    pen.lineJoin = "round";
    pen.beginPath();
    pen.moveTo(from.x, from.y);
    pen.lineTo(to.x, to.y);
    pen.stroke();
  }

  pad.addEventListener("pointerdown", (event) => {
    event.preventDefault();
    pad.setPointerCapture(event.pointerId);
    state.drawing = true;
    state.last = point(event);
    stroke(state.last, state.last);
    state.hasInk = true;
    schedulePredict();
  });

  pad.addEventListener("pointermove", (event) => {
    if (!state.drawing) return;
    const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
    for (const each of events.length ? events : [event]) {
      const next = point(each);
      stroke(state.last, next);
      state.last = next;
    }
    schedulePredict();
  });

  const endStroke = () => {
    if (!state.drawing) return;
    state.drawing = false;
    schedulePredict();
  };
  pad.addEventListener("pointerup", endStroke);
  pad.addEventListener("pointercancel", endStroke);
  $("clear").addEventListener("click", clearPad);

  // ---- predicting --------------------------------------------------------------------------------
  function schedulePredict() {
    if (!state.hasInk) return;
    if (state.predictInFlight) {
      state.predictAgain = true;
      return;
    }
    if (state.predictTimer !== null) return;
    const wait = Math.max(0, state.lastPredictAt + PREDICT_EVERY_MS - performance.now());
    state.predictTimer = setTimeout(predict, wait);
  }

  async function predict() {
    state.predictTimer = null;
    state.predictInFlight = true;
    state.predictAgain = false;
    state.lastPredictAt = performance.now();
    const generation = state.generation;
    try {
      const blob = await new Promise((resolve) => pad.toBlob(resolve, "image/png"));
      const form = new FormData();
      form.append("file", blob, "digit.png");
      const answer = await api(predictPath("/predict/image"), { method: "POST", body: form });
      if (generation !== state.generation) return;
      state.prediction = answer;
      state.feedbackSent = false;
      renderPrediction(answer);
      $("prediction-note").textContent = "Model version " + answer.model_version + ", " +
        fmtInt(answer.samples_learned) + " samples learned; confidence " + fmtPct(answer.probabilities[answer.digit]) + ".";
    } catch (err) {
      if (generation !== state.generation) return;
      state.prediction = null;
      renderPrediction(null);
      $("prediction-note").textContent = err.status === 422 ?
        "Not a digit yet: " + err.detail : describeError(err);
    } finally {
      state.predictInFlight = false;
      if (state.predictAgain) schedulePredict();
    }
  }

  function renderPrediction(answer) {
    $("prediction").textContent = answer ? String(answer.digit) : "?";
    document.body.dataset.prediction = answer ? String(answer.digit) : "";
    const probabilities = answer ? answer.probabilities : new Array(10).fill(0);
    const bars = $("bars").children;
    for (let digit = 0; digit < 10; digit++) {
      const bar = bars[digit];
      const p = probabilities[digit];
      bar.querySelector(".fill").style.height = (p * 100).toFixed(1) + "%";
      bar.querySelector(".pct").textContent = answer ? fmtPct(p, 0) : "";
      bar.classList.toggle("top", !!answer && digit === answer.digit);
      bar.setAttribute("aria-label", "digit " + digit + ": " + (answer ? fmtPct(p) : "no prediction"));
    }
    const ready = !!answer && !state.feedbackSent;
    $("feedback-correct").disabled = !ready;
    $("feedback-label").disabled = !ready;
    $("feedback-send").disabled = !ready;
  }

  function buildBars() {
    const bars = $("bars");
    for (let digit = 0; digit < 10; digit++) {
      const bar = document.createElement("div");
      bar.className = "bar";
      bar.setAttribute("role", "listitem");
      bar.innerHTML = '<span class="pct"></span><div class="fill"></div><span class="digit">' + digit + "</span>";
      bars.appendChild(bar);
    }
  }

  // ---- feedback ------------------------------------------------------------------------------------
  function sendFeedback(label) {
    const prediction = state.prediction;
    if (!prediction) return;
    const report = (text) => { $("feedback-status").textContent = text; };
    setFeedbackEnabled(false);
    guarded(async () => {
      report("Sending…");
      const receipt = await api("/feedback", {
        method: "POST", auth: true, json: { prediction_id: prediction.prediction_id, label },
      });
      state.feedbackSent = true;
      report("Thanks: published as a " + receipt.label + " (stream entry " + receipt.stream_id +
        "); the worker learns it within a second or so.");
    }, (text) => {
      report(text);
      if (!state.feedbackSent) setFeedbackEnabled(!!state.prediction);
    });
  }

  function setFeedbackEnabled(enabled) {
    for (const id of ["feedback-correct", "feedback-label", "feedback-send"]) $(id).disabled = !enabled;
  }

  $("feedback-correct").addEventListener("click", () => {
    if (state.prediction) sendFeedback(state.prediction.digit);
  });
  $("feedback").addEventListener("submit", (event) => {
    event.preventDefault();
    const choice = $("feedback-label").value;
    if (choice === "") {
      $("feedback-status").textContent = "Choose the right digit first.";
      $("feedback-label").focus();
      return;
    }
    sendFeedback(Number(choice));
  });

  // ---- live panel --------------------------------------------------------------------------------
  const live = { mode: "polling", source: null, refreshedAt: -Infinity, inFlight: false, again: false, events: 0 };

  function setLiveMode(mode) {
    live.mode = mode;
    document.body.dataset.live = mode; // "events" or "polling"
  }

  function connectEvents() {
    if (!window.EventSource) return setLiveMode("polling");
    const source = new EventSource(modelPath("/events"));
    live.source = source;
    source.onopen = () => {
      setLiveMode("events");
      refreshSoon(); // what changed before the stream opened (or while it was reconnecting) is not an event
    };
    for (const kind of EVENT_KINDS) {
      source.addEventListener(kind, () => {
        live.events += 1;
        document.body.dataset.lastEvent = kind;
        refreshSoon();
      });
    }
    source.onerror = () => {
      setLiveMode("polling"); // the browser reconnects by itself; meanwhile /model is read every second
      if (source.readyState === EventSource.CLOSED) setTimeout(connectEvents, RECONNECT_MS);
    };
  }

  async function refreshSoon() {
    if (live.inFlight) {
      live.again = true;
      return;
    }
    live.inFlight = true;
    try {
      do {
        live.again = false;
        await refresh();
      } while (live.again);
    } finally {
      live.inFlight = false;
    }
  }

  async function tick() {
    const every = live.mode === "events" ? EVENTS_POLL_MS : POLL_MS;
    if (performance.now() - live.refreshedAt >= every) await refreshSoon();
    setTimeout(tick, 250);
  }

  async function refresh() {
    live.refreshedAt = performance.now();
    try {
      const model = await api(modelPath());
      state.model = model;
      setBanner("ok", null);
      renderModel(model);
      $("live").classList.remove("stale");
      $("updated").textContent = " · updated " + new Date().toLocaleTimeString() +
        (live.mode === "events" ? " (live events)" : " (polling)");
      await refreshWeights(model);
      await refreshFeatures(model);
      await refreshVersions(model);
    } catch (err) {
      if (isNoModel(err)) {
        setBanner("no-model", describeError(err) + " Publish labelled samples (for example `digitstream seed`) " +
          "and run `digitstream worker`; this page updates by itself.");
        $("weights-note").textContent = "No model yet: the templates appear with the first snapshot.";
      } else {
        setBanner(err.status === 0 ? "unreachable" : "error", describeError(err) +
          (state.model ? " The numbers below are the last ones received." : ""));
        $("live").classList.add("stale");
      }
    }
  }

  function setStat(id, text, value) {
    const element = $(id);
    element.textContent = text;
    if (value === undefined || value === null) delete element.dataset.value;
    else element.dataset.value = String(value);
  }

  function renderModel(model) {
    const metrics = model.metrics || {};
    const worker = model.worker;
    const learned = worker && Number.isFinite(worker.samples_learned) ? worker.samples_learned : model.samples_learned;
    setStat("stat-samples", fmtInt(learned), learned);
    setStat("stat-version", model.version + (model.pinned ? " (pinned)" : ""), model.version);
    setStat("stat-age", fmtAge(model.age_seconds), model.age_seconds);
    const throughput = worker && Number.isFinite(worker.throughput) ? worker.throughput : metrics.throughput;
    setStat("stat-throughput", Number.isFinite(throughput) ? fmtInt(Math.round(throughput)) + " /s" : "–", throughput);
    const learning = model.learning || {};
    const atLeast = learning.health !== "ok" ? learning.backlog_at_least : metrics.lag_at_least;
    setStat("stat-lag", Number.isFinite(model.lag) ? fmtInt(model.lag) + (atLeast ? "+" : "") : "–", model.lag);
    const health = typeof learning.health === "string" ? learning.health : null;
    setStat("stat-health", health === null ? "–" : health === "ok" ? "ok: learning" : health, health);
    $("stat-health").title = learning.detail || "";
    $("stat-health").classList.toggle("warn", health !== null && health !== "ok");
    setStat("stat-preq", fmtPct(metrics.prequential_accuracy), metrics.prequential_accuracy);
    const span = Number.isFinite(metrics.rolling_window) ? " (last " + fmtInt(metrics.rolling_window) + ")" : "";
    setStat("stat-rolling", fmtPct(metrics.rolling_accuracy) + (metrics.rolling_accuracy == null ? "" : span),
      metrics.rolling_accuracy);
    const drift = Array.isArray(metrics.drift_events) ? metrics.drift_events : [];
    const lastDrift = drift.length ? drift[drift.length - 1] : null;
    const drifts = Number.isFinite(metrics.drift_events_total) ? Math.max(metrics.drift_events_total, drift.length)
      : drift.length;
    setStat("stat-drift", drifts + (lastDrift ? " (last at " + fmtInt(lastDrift.samples) + ")" : ""), drifts);
    const dead = worker && Number.isFinite(worker.deadletter_count) ? worker.deadletter_count
      : Number.isFinite(model.deadletter_count) ? model.deadletter_count : null;
    setStat("stat-deadletters", dead === null ? "–" : fmtInt(dead), dead);
    setStat("stat-worker", worker ? String(worker.state) : "none reporting", worker ? worker.state : null);
    $("stat-worker").title = worker && worker.worker_id ? "worker id " + worker.worker_id : "";
    drawCurve(metrics, learned);
    renderConfusion(metrics.confusion_matrix);
  }

  // ---- learning curves -----------------------------------------------------------------------------
  // The points of a snapshot's learning curve ([samples, prequential, rolling]), ending at ``latestN`` with
  // the snapshot's own accuracies when the curve's last point is older.
  function curvePoints(curve, latestN, prequential, rolling) {
    const points = (Array.isArray(curve) ? curve : []).filter((p) => Array.isArray(p) && Number.isFinite(p[0]));
    if (latestN && (!points.length || points[points.length - 1][0] < latestN) && prequential != null) {
      points.push([latestN, prequential, rolling]);
    }
    return points;
  }

  // Accuracy over samples learned, on ``canvas``: ``lines`` [{points: [[samples, accuracy], ...], colour}],
  // ``marks`` [{at: samples, colour}] as dashed vertical lines. One scale for all lines: round grid lines,
  // the accuracy axis ending at 100 %. Returns the last sample count drawn, or 0 (and ``emptyText`` on the
  // canvas) when no line has two points yet.
  function plotCurves(canvas, lines, marks, emptyText) {
    const g = canvas.getContext("2d");
    // Drawn at the size shown (the style sheet gives its aspect ratio), so labels stay 13 px at any width.
    const W = canvas.clientWidth || canvas.width;
    const H = canvas.clientHeight || canvas.height;
    const dpr = window.devicePixelRatio || 1;
    if (canvas.clientWidth && canvas.width !== Math.round(W * dpr)) canvas.width = Math.round(W * dpr);
    if (canvas.clientHeight && canvas.height !== Math.round(H * dpr)) canvas.height = Math.round(H * dpr);
    g.setTransform(canvas.clientWidth ? dpr : 1, 0, 0, canvas.clientWidth ? dpr : 1, 0, 0);
    const pad = { left: 48, right: 22, top: 12, bottom: 34 }; // right: room for the last tick's label
    g.clearRect(0, 0, W, H);
    g.font = "13px system-ui, sans-serif";
    const drawn = lines.map((line) => ({
      colour: line.colour,
      points: line.points.filter((p) => Number.isFinite(p[0]) && Number.isFinite(p[1])),
    }));
    if (!drawn.some((line) => line.points.length >= 2)) {
      g.fillStyle = "#5b6474";
      g.textAlign = "left";
      g.fillText(emptyText, pad.left, H / 2);
      return 0;
    }
    let maxX = 0;
    let minY = 1;
    for (const line of drawn) {
      for (const [n, v] of line.points) {
        maxX = Math.max(maxX, n);
        minY = Math.min(minY, v);
      }
    }
    maxX = maxX || 1;
    // Round grid lines: the smallest step giving at most 6 of them, the axis starting on one.
    const step = [0.01, 0.02, 0.05, 0.1, 0.2].find((s) => (1 - minY) / s <= 5) || 0.25;
    minY = Math.max(0, Math.floor(minY / step - 1e-9) * step);
    const x = (n) => pad.left + (n / maxX) * (W - pad.left - pad.right);
    const y = (v) => pad.top + (1 - (v - minY) / (1 - minY || 1)) * (H - pad.top - pad.bottom);

    // axes and grid
    g.strokeStyle = "#d6dae1";
    g.fillStyle = "#5b6474";
    g.lineWidth = 1;
    for (let v = minY; v <= 1 + 1e-9; v += step) {
      g.beginPath();
      g.moveTo(pad.left, y(v));
      g.lineTo(W - pad.right, y(v));
      g.stroke();
      g.textAlign = "right";
      g.fillText((v * 100).toFixed(0) + " %", pad.left - 6, y(v) + 4);
    }
    g.textAlign = "center";
    const magnitude = 10 ** Math.floor(Math.log10(maxX / 4));
    const xStep = [1, 2, 5, 10].map((m) => m * magnitude).find((s) => maxX / s <= 6);
    for (let n = 0; n <= maxX; n += xStep) g.fillText(fmtCompact(n), x(n), H - pad.bottom + 16);
    g.fillText("samples learned", (pad.left + W - pad.right) / 2, H - 4);

    for (const mark of marks) {
      if (!Number.isFinite(mark.at) || mark.at > maxX) continue;
      g.strokeStyle = mark.colour;
      g.lineWidth = 2;
      g.setLineDash([5, 3]);
      g.beginPath();
      g.moveTo(x(mark.at), pad.top);
      g.lineTo(x(mark.at), H - pad.bottom);
      g.stroke();
      g.setLineDash([]);
    }

    for (const line of drawn) {
      g.strokeStyle = line.colour;
      g.lineWidth = 2;
      g.beginPath();
      line.points.forEach(([n, v], i) => (i ? g.lineTo(x(n), y(v)) : g.moveTo(x(n), y(v))));
      g.stroke();
    }
    return maxX;
  }

  function drawCurve(metrics, learned) {
    const latestN = Number.isFinite(metrics.samples) ? metrics.samples : learned;
    const points = curvePoints(metrics.learning_curve, latestN, metrics.prequential_accuracy, metrics.rolling_accuracy);
    const drift = Array.isArray(metrics.drift_events) ? metrics.drift_events : [];
    const canvas = $("curve");
    const maxX = plotCurves(canvas, [
      { points: points.map((p) => [p[0], p[1]]), colour: "#1f5fbf" },
      { points: points.map((p) => [p[0], p[2]]), colour: "#e07b00" },
    ], drift.map((event) => ({ at: event.samples, colour: event.direction === "better" ? "#2e7d32" : "#c62828" })),
    "The curve appears after the first snapshots with learned samples.");
    if (!maxX) {
      $("curve-note").textContent = "";
      return;
    }
    $("curve-note").textContent = "· " + points.length + " points, " + drift.length + " drift event" +
      (drift.length === 1 ? "" : "s");
    canvas.setAttribute("aria-label", "Learning curve over " + fmtInt(maxX) + " samples: prequential accuracy " +
      fmtPct(metrics.prequential_accuracy) + ", rolling accuracy " + fmtPct(metrics.rolling_accuracy) + ", " +
      drift.length + " drift events");
  }

  // ---- confusion matrix ----------------------------------------------------------------------------
  function renderConfusion(matrix) {
    const valid = Array.isArray(matrix) && matrix.length === 10 && matrix.every((r) => Array.isArray(r) && r.length === 10);
    const key = valid ? JSON.stringify(matrix) : "";
    if (key === state.confusionKey) return;
    state.confusionKey = key;
    const table = $("confusion");
    table.textContent = "";
    if (!valid) {
      const cell = table.insertRow().insertCell();
      cell.className = "empty";
      cell.textContent = "No confusion matrix yet: it comes with the worker's snapshots.";
      return;
    }
    const head = table.createTHead().insertRow();
    const corner = document.createElement("th");
    corner.textContent = "true \\ pred";
    corner.style.fontSize = "0.65rem";
    head.appendChild(corner);
    for (let p = 0; p < 10; p++) {
      const th = document.createElement("th");
      th.scope = "col";
      th.textContent = String(p);
      head.appendChild(th);
    }
    const body = table.createTBody();
    for (let t = 0; t < 10; t++) {
      const row = body.insertRow();
      const th = document.createElement("th");
      th.scope = "row";
      th.textContent = String(t);
      row.appendChild(th);
      const total = matrix[t].reduce((a, b) => a + b, 0);
      for (let p = 0; p < 10; p++) {
        const count = matrix[t][p];
        const share = total ? count / total : 0;
        const cell = row.insertCell();
        cell.textContent = count ? fmtCompact(count) : "";
        const alpha = share ? 0.08 + 0.92 * Math.sqrt(share) : 0;
        cell.style.background = t === p ? "rgba(31, 95, 191, " + alpha + ")" : "rgba(198, 40, 40, " + alpha + ")";
        cell.style.color = alpha > 0.55 ? "#fff" : "#1d2330";
        cell.title = "true " + t + ", predicted " + p + ": " + fmtInt(count) + (total ? " (" + fmtPct(share) + " of the " + t + "s)" : "");
      }
    }
  }

  // ---- weight templates ------------------------------------------------------------------------------
  function buildWeights() {
    const holder = $("weights");
    for (let digit = 0; digit < 10; digit++) {
      const figure = document.createElement("figure");
      figure.setAttribute("role", "listitem");
      const canvas = document.createElement("canvas");
      canvas.width = 28;
      canvas.height = 28;
      canvas.id = "weights-" + digit;
      canvas.setAttribute("role", "img");
      canvas.setAttribute("aria-label", "weight template of digit " + digit + " (not loaded yet)");
      const caption = document.createElement("figcaption");
      caption.textContent = String(digit);
      figure.append(canvas, caption);
      holder.appendChild(figure);
    }
  }

  async function refreshWeights(model) {
    const now = performance.now();
    if (model.version === state.weightsVersion || now - state.weightsFetchedAt < POLL_MS) return;
    state.weightsFetchedAt = now;
    let data;
    try {
      data = await api(modelPath("/weights"));
    } catch (err) {
      $("weights-note").textContent = "Weight templates unavailable: " + describeError(err);
      return;
    }
    const mlp = data.rule === "mlp";
    $("weights-title").textContent = mlp ? "What each digit responds to" : "Weight templates";
    $("weights-linear").hidden = mlp;
    $("weights-mlp").hidden = !mlp;
    for (let digit = 0; digit < 10; digit++) drawTemplate($("weights-" + digit), data.weights[digit], digit);
    state.weightsVersion = data.version;
    $("weights").dataset.version = String(data.version);
    $("weights").dataset.rule = data.rule;
    $("weights-note").textContent = "Version " + data.version + ", after " + fmtInt(data.samples_learned) +
      " samples; each template is scaled to its own largest weight.";
  }

  // ---- hidden-layer features (mlp rule) ----------------------------------------------------------------
  async function refreshFeatures(model) {
    const mlp = model.rule === "mlp";
    $("features-section").hidden = !mlp;
    $("features-link").hidden = !mlp;
    if (!mlp) {
      state.featuresVersion = null;
      return;
    }
    const now = performance.now();
    if (model.version === state.featuresVersion || now - state.featuresFetchedAt < FEATURES_EVERY_MS) return;
    state.featuresFetchedAt = now;
    let data;
    try {
      data = await api(modelPath("/features?count=" + FEATURE_COUNT));
    } catch (err) {
      $("features-note").textContent = "Hidden-layer features unavailable: " + describeError(err);
      return;
    }
    const holder = $("features");
    holder.replaceChildren();
    data.units.forEach((unit, rank) => {
      const figure = document.createElement("figure");
      figure.setAttribute("role", "listitem");
      const canvas = document.createElement("canvas");
      canvas.width = 28;
      canvas.height = 28;
      canvas.id = "feature-" + rank;
      canvas.dataset.unit = String(unit.unit);
      drawTemplate(canvas, unit.input, null);
      const label = "hidden unit " + unit.unit + ": votes for " + unit.votes_for + ", against " + unit.votes_against;
      canvas.setAttribute("aria-label", label);
      const caption = document.createElement("figcaption");
      caption.textContent = "+" + unit.votes_for + " \u2212" + unit.votes_against;
      caption.title = label;
      figure.append(canvas, caption);
      holder.appendChild(figure);
    });
    state.featuresVersion = data.version;
    holder.dataset.version = String(data.version);
    $("features-note").textContent = "Version " + data.version + ": the " + data.units.length + " most important of " +
      fmtInt(data.hidden) + " units; each map is scaled to its own largest weight.";
  }

  function drawTemplate(canvas, weights, digit) {
    const g = canvas.getContext("2d");
    const image = g.createImageData(28, 28);
    let peak = 0;
    for (const w of weights) peak = Math.max(peak, Math.abs(w));
    peak = peak || 1;
    for (let i = 0; i < 784; i++) {
      const v = weights[i] / peak;
      const target = v >= 0 ? POSITIVE : NEGATIVE;
      const a = Math.abs(v);
      image.data[4 * i] = Math.round(255 + a * (target[0] - 255));
      image.data[4 * i + 1] = Math.round(255 + a * (target[1] - 255));
      image.data[4 * i + 2] = Math.round(255 + a * (target[2] - 255));
      image.data[4 * i + 3] = 255;
    }
    g.putImageData(image, 0, 0);
    if (digit !== null) canvas.setAttribute("aria-label", "weight template of digit " + digit);
  }

  // ---- versions, pin / unpin ---------------------------------------------------------------------------
  async function refreshVersions(model, force = false) {
    const now = performance.now();
    const key = model.version + "/" + model.pinned;
    if (!force && key === state.versionsForModel && now - state.versionsFetchedAt < VERSIONS_EVERY_MS) return;
    state.versionsFetchedAt = now;
    state.versionsForModel = key;
    try {
      renderVersions(await api(modelPath("/versions")));
    } catch (err) {
      $("versions-status").textContent = "Versions unavailable: " + describeError(err);
    }
  }

  function renderVersions(data) {
    const body = $("versions").tBodies[0];
    body.textContent = "";
    const kept = [...data.versions].reverse(); // newest first
    for (const info of kept) {
      const row = body.insertRow();
      row.dataset.version = String(info.version);
      if (info.version === data.served) row.className = "served";
      row.insertCell().textContent = String(info.version);
      row.insertCell().textContent = fmtInt(info.samples_learned);
      row.insertCell().textContent = info.created_at ? new Date(info.created_at * 1000).toLocaleTimeString() : "–";
      row.insertCell().textContent = fmtPct(info.prequential_accuracy);
      const labels = [];
      if (info.version === data.served) labels.push("served");
      if (info.version === data.latest) labels.push("latest");
      if (info.version === data.pinned) labels.push("pinned");
      row.insertCell().textContent = labels.join(", ");
      const button = document.createElement("button");
      button.type = "button";
      if (info.version === data.pinned) {
        button.textContent = "Unpin";
        button.setAttribute("aria-label", "Unpin version " + info.version + " and follow the newest again");
        button.addEventListener("click", () => changePin(null, button));
      } else {
        button.textContent = "Pin";
        button.setAttribute("aria-label", "Pin version " + info.version);
        button.addEventListener("click", () => changePin(info.version, button));
      }
      row.insertCell().appendChild(button);
    }
    if (!kept.length) {
      body.insertRow().insertCell().textContent = "No versions kept yet.";
    }
  }

  function changePin(version, button) {
    const report = (text) => { $("versions-status").textContent = text; };
    button.disabled = true;
    guarded(async () => {
      const model = version === null ?
        await api(modelPath("/unpin"), { method: "POST", auth: true }) :
        await api(modelPath("/pin"), { method: "POST", auth: true, json: { version } });
      state.model = model;
      renderModel(model);
      report(version === null ? "Unpinned: following the newest snapshot again (now version " + model.version + ")." :
        "Pinned: every replica serves version " + model.version + " until unpinned.");
      await refreshVersions(model, true);
    }, (text) => {
      report(text);
      button.disabled = false;
    });
  }

  // ---- compare models ------------------------------------------------------------------------------
  // Several models' prequential learning curves on one canvas, read from GET /compare (one request for
  // all of them, every COMPARE_EVERY_MS while some are chosen): one event stream per compared model
  // would take one of the browser's six connections to this host each, and the service's SSE slots.
  const COMPARE_MAX = 8; // as the service's GET /compare
  const COMPARE_EVERY_MS = 3000;
  // Okabe & Ito's palette (told apart with the common colour-vision deficiencies), yellow replaced by ink.
  const SERIES_COLOURS = ["#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#1d2330", "#8c6d31"];
  const compare = { names: [], asked: "", inFlight: false, refreshedAt: -Infinity, models: [] };

  function buildComparePicker(choices) {
    const holder = $("compare-choices");
    const chosen = new Set(compare.names);
    holder.replaceChildren(...choices.map(({ name, note }) => {
      const label = document.createElement("label");
      const box = document.createElement("input");
      box.type = "checkbox";
      box.value = name;
      box.checked = chosen.has(name);
      box.addEventListener("change", onCompareChoice);
      const detail = document.createElement("span");
      detail.className = "muted";
      detail.textContent = note;
      label.append(box, name + " ", detail);
      return label;
    }));
    compare.names = compare.names.filter((name) => choices.some((c) => c.name === name));
    limitChoices();
    $("compare-section").hidden = choices.length < 2;
  }

  function onCompareChoice() {
    compare.names = [...$("compare-choices").querySelectorAll("input:checked")].map((box) => box.value);
    limitChoices();
    refreshCompare();
  }

  function limitChoices() {
    const full = compare.names.length >= COMPARE_MAX;
    for (const box of $("compare-choices").querySelectorAll("input")) box.disabled = full && !box.checked;
  }

  async function refreshCompare() {
    compare.refreshedAt = performance.now();
    const asked = compare.names.map(encodeURIComponent).join(",");
    compare.asked = asked;
    if (!asked) {
      renderCompare([]);
      return;
    }
    compare.inFlight = true;
    try {
      const data = await api("/compare?names=" + asked);
      if (asked === compare.asked) renderCompare(data.models); // else the choice changed meanwhile
    } catch (err) {
      if (asked === compare.asked) $("compare-status").textContent = "Comparison unavailable: " + describeError(err);
    } finally {
      compare.inFlight = false;
    }
  }

  function tickCompare() {
    const due = performance.now() - compare.refreshedAt >= COMPARE_EVERY_MS;
    if (due && compare.names.length && !compare.inFlight && !document.hidden) refreshCompare();
  }

  function renderCompare(models) {
    compare.models = models;
    const canvas = $("compare-curve");
    const series = models.map((model, i) => ({
      model,
      colour: SERIES_COLOURS[i % SERIES_COLOURS.length],
      points: curvePoints(model.learning_curve, model.samples_learned, model.prequential_accuracy,
        model.rolling_accuracy).map((p) => [p[0], p[1]]),
    }));
    const maxX = plotCurves(canvas, series, [], models.length ?
      "The curves appear once the chosen models have learned from their streams." : "Pick two or more models above.");
    canvas.dataset.models = String(models.length);
    canvas.setAttribute("aria-label", models.length ?
      "Prequential learning curves of " + models.length + " models over " + fmtInt(maxX) + " samples: " +
      models.map((m) => m.name + " " + fmtPct(m.prequential_accuracy)).join(", ") :
      "Learning curves of the compared models: no model chosen yet");

    $("compare-legend").replaceChildren(...series.map(({ model, colour }) => {
      const item = document.createElement("li");
      item.dataset.model = model.name;
      item.dataset.colour = colour;
      item.append(swatch(colour), model.name + ": " + fmtPct(model.prequential_accuracy));
      return item;
    }));

    const body = $("compare-table").tBodies[0];
    body.textContent = "";
    for (const { model, colour } of series) {
      const row = body.insertRow();
      row.dataset.model = model.name;
      const name = row.insertCell();
      name.append(swatch(colour), model.name);
      row.insertCell().textContent = model.rule;
      numberCell(row, String(model.learning_rate), model.learning_rate);
      row.insertCell().textContent = model.stream;
      numberCell(row, fmtInt(model.samples_learned), model.samples_learned).dataset.field = "samples";
      numberCell(row, fmtPct(model.prequential_accuracy), model.prequential_accuracy).dataset.field = "prequential";
      const span = model.rolling_window ? " (last " + fmtInt(model.rolling_window) + ")" : "";
      numberCell(row, fmtPct(model.rolling_accuracy) + (model.rolling_accuracy == null ? "" : span),
        model.rolling_accuracy).dataset.field = "rolling";
      numberCell(row, model.version === null ? "none yet" : String(model.version), model.version).dataset.field =
        "version";
    }
    $("compare-status").textContent = models.length ? "Latest snapshots at " + new Date().toLocaleTimeString() +
      "; refreshed every " + COMPARE_EVERY_MS / 1000 + " s." + (models.length < 2 ? " Pick another model." : "") :
      "Pick two or more models above.";
  }

  function swatch(colour) {
    const mark = document.createElement("span");
    mark.className = "swatch";
    mark.style.backgroundColor = colour;
    mark.setAttribute("aria-hidden", "true");
    return mark;
  }

  function numberCell(row, text, value) {
    const cell = row.insertCell();
    cell.className = "num";
    cell.textContent = text;
    if (value !== null && value !== undefined) cell.dataset.value = String(value);
    return cell;
  }

  // ---- formatting ------------------------------------------------------------------------------------
  function fmtInt(n) {
    return Number.isFinite(n) ? Math.round(n).toLocaleString("en-US") : "–";
  }

  function fmtPct(v, digits = 2) {
    return Number.isFinite(v) ? (v * 100).toFixed(digits) + " %" : "–";
  }

  function fmtCompact(n) {
    if (n >= 1e6) return (n / 1e6).toFixed(n >= 1e7 ? 0 : 1) + "M";
    if (n >= 1e4) return (n / 1e3).toFixed(0) + "k";
    if (n >= 1e3) return (n / 1e3).toFixed(1) + "k";
    return String(Math.round(n));
  }

  function fmtAge(seconds) {
    if (!Number.isFinite(seconds)) return "–";
    if (seconds < 60) return seconds.toFixed(1) + " s";
    if (seconds < 3600) return (seconds / 60).toFixed(1) + " min";
    return (seconds / 3600).toFixed(1) + " h";
  }

  // ---- start -------------------------------------------------------------------------------------------
  buildBars();
  buildWeights();
  clearPad();
  renderConfusion(null);
  document.body.dataset.state = "loading";
  setLiveMode("polling");
  // ---- model selector ----------------------------------------------------------------------------
  const listing = { key: null };

  async function listModels() {
    let listed;
    try {
      listed = await api("/models?count=1000");
    } catch (err) {
      return; // an older service, or Redis away: the default model only
    }
    const others = listed.models.filter((m) => m.name !== listed.default);
    const key = JSON.stringify([listed.default, others.map((m) => [m.name, m.rule, m.params.learning_rate])]);
    if (!others.length || key === listing.key) return; // rebuilt only when the registry changed
    listing.key = key;
    const select = $("model-select");
    const names = others.map((m) => m.name);
    select.replaceChildren(new Option(listed.default + " (default)", ""), ...names.map((n) => new Option(n, n)));
    select.value = shown.name;
    $("model-choice").hidden = false;
    const registeredDefault = listed.models.find((m) => m.name === listed.default);
    const describe = (m) => m ? m.rule + ", rate " + m.params.learning_rate : "";
    buildComparePicker([
      { name: listed.default, note: registeredDefault ? describe(registeredDefault) + ", default" : "default" },
      ...others.map((m) => ({ name: m.name, note: describe(m) })),
    ]);
  }

  $("model-select").addEventListener("change", (event) => {
    shown.name = event.target.value;
    document.body.dataset.model = shown.name;
    Object.assign(state, { model: null, weightsVersion: null, weightsFetchedAt: -Infinity, featuresVersion: null,
                           featuresFetchedAt: -Infinity, versionsFetchedAt: -Infinity, versionsForModel: null,
                           confusionKey: null });
    if (live.source) live.source.close();
    connectEvents();
    refreshSoon();
  });

  listModels();
  setInterval(listModels, LIST_EVERY_MS);
  renderCompare([]);
  setInterval(tickCompare, 500);
  let resized = null; // the charts follow the page's width: redrawn once it settles
  window.addEventListener("resize", () => {
    clearTimeout(resized);
    resized = setTimeout(() => {
      if (state.model) renderModel(state.model);
      if (!$("compare-section").hidden) renderCompare(compare.models);
    }, 150);
  });
  connectEvents();
  tick();
})();
