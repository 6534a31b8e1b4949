// ilastik-web extension, part 4: the side panel and keyboard shortcuts.
//
// Plain DOM: classes (pick, rename, recolour, add, delete), brush size, eraser, undo/redo,
// layer visibility and prediction opacity, live-update toggle, training status with progress
// and generation, the feature-selection matrix and feature importances, and a help panel.
// It talks to /api/projects/<id> (HTTP and the /events WebSocket); the project is the first
// served one unless the page URL names another with ?project=<id>.
(function () {
  "use strict";
  const IW = window.ilastikWeb;
  if (!IW || IW.reloading) return;
  const ng = IW.ng;
  const brush = IW.brush;

  const prefix = location.pathname.replace(/\/v\/[^/]+\/?.*$/, "");
  const api = (path) => prefix + "/api/projects" + path;
  const FEATURE_NAMES = {
    GaussianSmoothing: "Gaussian smoothing",
    LaplacianOfGaussian: "Laplacian of Gaussian",
    GaussianGradientMagnitude: "Gradient magnitude",
    DifferenceOfGaussians: "Difference of Gaussians",
    StructureTensorEigenvalues: "Structure tensor EVs",
    HessianOfGaussianEigenvalues: "Hessian EVs",
  };
  const SHORTCUTS = [
    ["P", "paint mode on/off: left-drag paints (the badge over the view says so)"],
    ["wheel", "next / previous slice (Neuroglancer's convention, also in paint mode)"],
    ["Ctrl+wheel", "zoom"],
    ["right-drag", "pan (left-drag pans outside paint mode)"],
    ["Ctrl+Shift+drag", "paint in any mode"],
    ["E", "eraser on/off"],
    ["[ / ]", "smaller / larger brush"],
    ["Shift+1…9", "choose class 1…9"],
    ["Ctrl+Z", "undo"],
    ["Ctrl+Shift+Z, Ctrl+Y", "redo"],
    ["Shift+L", "live updates on/off"],
    ["?", "this help"],
  ];

  const NON_TEXT_INPUTS = new Set(["checkbox", "radio", "range", "button", "color", "submit"]);

  const project = (IW.project = { id: null, info: null, classes: [], features: null });

  async function request(method, path, body) {
    return requestUrl(method, api(path), body);
  }

  /** JSON from any server URL; a failure shows in the status line and throws. */
  async function requestUrl(method, url, body) {
    const init = { method, headers: {} };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(url, init);
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (e) {
      data = { error: text };
    }
    if (!response.ok) {
      const message = (data && (data.error || data.message)) || response.statusText;
      status(String(message), true);
      const error = new Error(message);
      error.status = response.status;
      throw error;
    }
    return data;
  }
  const projectPath = (rest) => "/" + encodeURIComponent(project.id) + (rest || "");

  // --- DOM helpers -----------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key === "class") node.className = value;
      else if (value !== undefined && value !== null && value !== false) {
        node.setAttribute(key, value === true ? "" : value);
      }
    }
    for (const child of children) {
      if (child !== null && child !== undefined) {
        node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
      }
    }
    return node;
  }

  const root = el("div", { class: "iw-panel", id: "iw-panel" });
  const statusLine = el("div", { class: "iw-status" });
  function status(text, isError) {
    statusLine.textContent = text;
    statusLine.classList.toggle("iw-error", !!isError);
  }

  // Header and tools
  const paintButton = el("button", { class: "iw-toggle", id: "iw-paint", title: "Paint mode (P)",
                                     onclick: () => setPaintMode(!brush.paintMode) }, "Paint");
  const eraserButton = el("button", { class: "iw-toggle", id: "iw-eraser", title: "Eraser (E)",
                                      onclick: () => brush.set({ eraser: !brush.eraser }) },
                          "Eraser");
  const undoButton = el("button", { id: "iw-undo", title: "Undo (Ctrl+Z)",
                                    onclick: () => undo() }, "Undo");
  const redoButton = el("button", { id: "iw-redo", title: "Redo (Ctrl+Shift+Z)",
                                    onclick: () => redo() }, "Redo");
  const sizeInput = el("input", { type: "range", min: "0.5", max: "20", step: "0.5",
                                  id: "iw-brush-size", value: String(brush.radius),
                                  oninput: (e) => brush.set({ radius: Number(e.target.value) }) });
  const sizeLabel = el("span", { class: "iw-size-label" });
  const helpButton = el("button", { class: "iw-help-button", title: "Shortcuts (?)",
                                    onclick: () => toggleHelp() }, "?");

  const classList = el("div", { class: "iw-classes", id: "iw-classes" });
  const addClassButton = el("button", { id: "iw-add-class", onclick: () => addClass() },
                            "+ class");

  const layerBox = el("div", { class: "iw-layers", id: "iw-layers" });
  const opacityInput = el("input", { type: "range", min: "0", max: "1", step: "0.05",
                                     id: "iw-prob-opacity", oninput: (e) => setOpacity(e) });

  const liveInput = el("input", { type: "checkbox", id: "iw-live",
                                  onchange: (e) => setLive(e.target.checked) });
  const trainButton = el("button", { id: "iw-train", onclick: () => train() }, "Train now");
  const trainingText = el("div", { class: "iw-training", id: "iw-training" });
  const progressBar = el("div", { class: "iw-progress-bar" });
  const progress = el("div", { class: "iw-progress" }, progressBar);

  const featureTable = el("table", { class: "iw-features", id: "iw-features" });
  const featureApply = el("button", { id: "iw-features-apply", onclick: () => applyFeatures() },
                          "Apply features");
  const importanceBox = el("div", { class: "iw-importance", id: "iw-importance" });

  const help = el("div", { class: "iw-help", id: "iw-help", hidden: true },
    el("h3", {}, "Painting in ilastik-web"),
    el("table", {}, ...SHORTCUTS.map(([k, v]) => el("tr", {}, el("td", {}, el("kbd", {}, k)),
                                                    el("td", {}, v)))),
    el("p", {}, "Strokes show at once and are replaced by the server's labels layer. With live " +
       "updates on, the classifier retrains after each stroke and the prediction layers " +
       "switch to the new generation without moving the view. The view, visible layers and " +
       "active class are kept in the page URL."),
    el("button", { onclick: () => toggleHelp(false) }, "Close"));

  const section = (title, ...children) => el("section", {}, el("h4", {}, title), ...children);
  root.append(
    el("div", { class: "iw-header" }, el("strong", {}, "ilastik-web"),
       el("span", { class: "iw-project", id: "iw-project" }), helpButton),
    section("Brush",
      el("div", { class: "iw-row" }, paintButton, eraserButton, undoButton, redoButton),
      el("div", { class: "iw-row" }, el("label", { for: "iw-brush-size" }, "Size"), sizeInput,
         sizeLabel)),
    section("Classes", classList, addClassButton),
    section("Layers", layerBox,
      el("div", { class: "iw-row" }, el("label", { for: "iw-prob-opacity" },
                                        "Prediction opacity"), opacityInput)),
    section("Training",
      el("div", { class: "iw-row" }, el("label", {}, liveInput, " live updates"), trainButton),
      progress, trainingText),
    section("Features", featureTable, featureApply, importanceBox),
    statusLine);
  const helpTable = help.querySelector("table");
  document.body.appendChild(root);
  document.body.appendChild(help);
  document.body.classList.add("iw-has-panel");
  window.dispatchEvent(new Event("resize")); // let Neuroglancer re-measure its panels

  // Hooks for the later parts (SAM, jobs): their sections go above the status line, their
  // keys into the help, and they start once the project is known.
  const readyCallbacks = [];
  const eventListeners = [];
  IW.panel = {
    el, section, status, request, requestUrl, prefix,
    addSection(node) {
      root.insertBefore(node, statusLine);
    },
    addShortcuts(rows) {
      for (const [k, v] of rows) {
        helpTable.appendChild(el("tr", {}, el("td", {}, el("kbd", {}, k)), el("td", {}, v)));
      }
    },
    onEvent(fn) {
      eventListeners.push(fn);
    },
    whenReady(fn) {
      if (IW.ready) fn();
      else readyCallbacks.push(fn);
    },
  };

  function toggleHelp(show) {
    help.hidden = show === undefined ? !help.hidden : !show;
  }

  // --- brush and classes -----------------------------------------------------------------

  function setPaintMode(on) {
    brush.set({ paintMode: on });
  }

  function refreshBrush() {
    paintButton.classList.toggle("iw-on", brush.paintMode);
    eraserButton.classList.toggle("iw-on", brush.eraser);
    sizeInput.value = String(brush.radius);
    sizeLabel.textContent = "radius " + brush.radius + " vox";
    for (const row of classList.children) {
      const active = Number(row.dataset.value) === brush.label;
      row.classList.toggle("iw-active", active);
      const radio = row.querySelector('input[type="radio"]');
      if (radio) radio.checked = active;  // keyboard class changes update the radios too
    }
    const cls = project.classes.find((c) => c.value === brush.label);
    if (cls) brush.color = cls.color;
    document.body.classList.toggle("iw-painting", brush.paintMode);
    if (IW.setUrlExtra) IW.setUrlExtra("activeClass", brush.label);
  }
  brush.onChange.push(refreshBrush);

  function renderClasses() {
    classList.replaceChildren(...project.classes.map((cls, index) => {
      const row = el("div", { class: "iw-class", "data-value": String(cls.value) },
        el("input", { type: "radio", name: "iw-class", title: "Paint this class (Shift+" +
                      (index + 1) + ")", checked: cls.value === brush.label,
                      onchange: () => brush.set({ label: cls.value, eraser: false }) }),
        el("input", { type: "color", value: cls.color, title: "Colour",
                      onchange: (e) => request("PATCH", projectPath("/classes/" + cls.value),
                                               { color: e.target.value }) }),
        el("input", { type: "text", value: cls.name, class: "iw-class-name", title: "Rename",
                      onchange: (e) => request("PATCH", projectPath("/classes/" + cls.value),
                                               { name: e.target.value }) }),
        el("button", { class: "iw-delete", title: "Delete class and its labels (undoable)",
                       onclick: () => {
                         if (confirm('Delete class "' + cls.name + '" and erase its labels?')) {
                           request("DELETE", projectPath("/classes/" + cls.value));
                         }
                       } }, "×"));
      return row;
    }));
    if (!project.classes.some((c) => c.value === brush.label) && project.classes.length) {
      brush.label = project.classes[0].value;
    }
    refreshBrush();
  }

  function addClass() {
    const name = "Label " + (project.classes.length + 1);
    request("POST", projectPath("/classes"), { name });
  }

  brush.onStroke = async function (stroke) {
    const result = await request("POST", projectPath("/strokes"), {
      points_xyz: stroke.points, radius: stroke.radius, label: stroke.label, plane: stroke.plane,
    });
    return result && result.changed ? result.revision : null;
  };

  async function undo() {
    await request("POST", projectPath("/undo"));
  }
  async function redo() {
    await request("POST", projectPath("/redo"));
  }

  // --- layers ----------------------------------------------------------------------------

  const LAYER_ROLES = ["labels", "probabilities", "segmentation", "uncertainty"];
  function renderLayers() {
    const layers = (project.info && project.info.layers) || {};
    layerBox.replaceChildren(...LAYER_ROLES.filter((role) => layers[role]).map((role) => {
      const managed = ng.layerServing(layers[role].id);
      return el("label", { class: "iw-layer" },
        el("input", { type: "checkbox", "data-role": role, checked: managed && managed.visible,
                      onchange: (e) => {
                        const m = ng.layerServing(layers[role].id);
                        if (m) m.setVisible(e.target.checked);
                      } }),
        " " + role);
    }));
    const prob = layers.probabilities && ng.layerServing(layers.probabilities.id);
    opacityInput.disabled = !prob;
    if (prob && prob.layer.opacity) opacityInput.value = String(prob.layer.opacity.value);
  }

  /** Tick the layer checkboxes as the layers are (visibility changed in Neuroglancer). */
  function syncLayerChecks() {
    const layers = (project.info && project.info.layers) || {};
    for (const input of layerBox.querySelectorAll("input[data-role]")) {
      const entry = layers[input.dataset.role];
      const managed = entry && ng.layerServing(entry.id);
      const visible = !!(managed && managed.visible);
      if (input.checked !== visible) input.checked = visible;
    }
  }
  ng.viewer().layerManager.layersChanged.add(syncLayerChecks);
  ng.viewer().state.changed.add(syncLayerChecks);

  function setOpacity(event) {
    const layers = (project.info && project.info.layers) || {};
    const prob = layers.probabilities && ng.layerServing(layers.probabilities.id);
    if (prob && prob.layer.opacity) prob.layer.opacity.value = Number(event.target.value);
  }

  // --- training and features ---------------------------------------------------------------

  function renderTraining(training) {
    if (!training) return;
    const generation = project.info ? project.info.generation : training.generation;
    const busy = ["waiting", "features", "training"].includes(training.state);
    progressBar.style.width = Math.round(100 * (busy ? training.progress || 0.05 : 1)) + "%";
    progress.classList.toggle("iw-busy", busy);
    let text = "generation " + generation + " · " + training.state;
    if (training.message) text += " · " + training.message;
    if (!busy && training.last_seconds) text += " · last " + training.last_seconds.toFixed(1) + " s";
    trainingText.textContent = text;
    trainingText.dataset.state = training.state;
    trainingText.dataset.generation = String(generation);
  }

  async function loadFeatures() {
    project.features = await request("GET", projectPath("/features"));
    renderFeatures();
  }

  function renderFeatures() {
    const f = project.features;
    if (!f) return;
    const chosen = new Set(f.selection.map(([id, sigma]) => id + "@" + sigma));
    const in2d = new Set(f.selection.filter((s) => s[2]).map((s) => s[1]));
    const head = el("tr", {}, el("th", {}, "σ"),
                    ...f.scales.map((s) => el("th", {}, String(s))));
    const rows = f.feature_ids.map((id) => el("tr", {}, el("td", {}, FEATURE_NAMES[id] || id),
      ...f.scales.map((sigma) => el("td", {}, el("input", {
        type: "checkbox", "data-feature": id, "data-sigma": String(sigma),
        checked: chosen.has(id + "@" + sigma),
        disabled: sigma < 0.5 && id !== "GaussianSmoothing", // ilastik: σ 0.3 smoothing only
      })))));
    const flags = el("tr", { class: "iw-in2d" }, el("td", { title: "compute in 2D per slice" },
                                                    "in 2D"),
      ...f.scales.map((sigma) => el("td", {}, el("input", {
        type: "checkbox", "data-in2d": String(sigma), checked: in2d.has(sigma) }))));
    featureTable.replaceChildren(el("thead", {}, head), el("tbody", {}, ...rows, flags));
  }

  async function applyFeatures() {
    const selection = [];
    const in2d = new Set(Array.from(featureTable.querySelectorAll("input[data-in2d]"))
      .filter((i) => i.checked).map((i) => Number(i.dataset.in2d)));
    for (const input of featureTable.querySelectorAll("input[data-feature]")) {
      if (!input.checked) continue;
      const sigma = Number(input.dataset.sigma);
      selection.push([input.dataset.feature, sigma, in2d.has(sigma)]);
    }
    project.features = await request("PUT", projectPath("/features"), { selection });
    renderFeatures();
    status("features applied: " + selection.length + " (retraining)");
  }

  async function loadImportance() {
    if (!project.info || project.info.generation < 1) return;
    let data;
    try {
      data = await request("GET", projectPath("/importance"));
    } catch (e) {
      return;
    }
    // The generation event can arrive before the new classifier answers: ask again.
    if (project.info && data.generation < project.info.generation) {
      setTimeout(loadImportance, 300);
      return;
    }
    const entries = Object.entries(data.importance || {}).sort((a, b) => b[1] - a[1]).slice(0, 8);
    const top = entries.length ? entries[0][1] : 1;
    importanceBox.replaceChildren(el("div", { class: "iw-importance-title" },
                                     "Most important (generation " + data.generation + ")"),
      ...entries.map(([name, value]) => {
        // "Gaussian Smoothing (σ=1.6) [c1]": the σ gets its own column so it always shows.
        const m = /^(.*?) \(σ=([^)]*)\)(.*)$/.exec(name);
        const label = m ? m[1] + m[3] : name;
        return el("div", { class: "iw-bar-row", title: name + ": " + value.toFixed(4) },
          el("span", { class: "iw-bar-name" }, label),
          el("span", { class: "iw-bar-sigma" }, m ? "σ " + m[2] : ""),
          el("span", { class: "iw-bar-track" },
             el("span", { class: "iw-bar", style: "width:" + Math.round(100 * value / top) + "%" })));
      }));
  }

  async function setLive(enabled) {
    await request("PUT", projectPath("/live"), { enabled });
  }
  async function train() {
    status("training…");
    const result = await request("POST", projectPath("/train"));
    status("trained generation " + result.generation);
  }

  // --- project state and events ------------------------------------------------------------

  function applyInfo(info) {
    project.info = info;
    project.classes = info.classes;
    IW.labelsLayerId = info.layers.labels && info.layers.labels.id;
    document.getElementById("iw-project").textContent = info.id;
    undoButton.disabled = !info.can_undo;
    redoButton.disabled = !info.can_redo;
    liveInput.checked = !!info.live_updates;
    renderClasses();
    renderLayers();
    renderTraining(info.training);
  }

  let refreshTimer = null;
  function refreshSoon() {
    if (refreshTimer !== null) return;
    refreshTimer = setTimeout(async () => {
      refreshTimer = null;
      applyInfo(await request("GET", projectPath()));
    }, 50);
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const socket = new WebSocket(scheme + location.host + api(projectPath("/events")));
    socket.onmessage = (message) => {
      const event = JSON.parse(message.data);
      const payload = event.payload || {};
      for (const fn of eventListeners) fn(event);
      switch (event.kind) {
        case "hello":
          applyInfo(payload);
          loadImportance();
          break;
        case "training":
          renderTraining(payload);
          break;
        case "generation":
          refreshSoon();
          setTimeout(loadImportance, 100);
          break;
        case "features":
          loadFeatures();
          break;
        case "live":
          liveInput.checked = !!payload.enabled;
          break;
        case "presence": // for the hooks (people.js)
          break;
        default: // labels, classes
          refreshSoon();
      }
    };
    socket.onclose = () => {
      status("connection to the server lost; retrying…", true);
      setTimeout(connect, 2000);
    };
    socket.onopen = () => status("");
    IW.socket = socket;
  }

  // --- keyboard ------------------------------------------------------------------------------

  window.addEventListener("keydown", (event) => {
    const target = event.target;
    // Only fields that take typing keep the keys; a focused checkbox, slider or button
    // (after a click in the panel) must not swallow the shortcuts.
    const typing = target && (target.tagName === "TEXTAREA" || target.isContentEditable ||
      (target.tagName === "INPUT" && !NON_TEXT_INPUTS.has(target.type)) ||
      target.tagName === "SELECT");
    if (typing) return;
    const ctrl = event.ctrlKey || event.metaKey;
    let handled = true;
    if (ctrl && event.code === "KeyZ" && !event.shiftKey) undo();
    else if (ctrl && (event.code === "KeyY" || (event.code === "KeyZ" && event.shiftKey))) redo();
    else if (ctrl || event.altKey) handled = false;
    else if (event.code === "KeyP" && !event.shiftKey) setPaintMode(!brush.paintMode);
    else if (event.code === "KeyE" && !event.shiftKey) brush.set({ eraser: !brush.eraser });
    else if (event.code === "BracketLeft") brush.set({ radius: Math.max(0.5, brush.radius - 0.5) });
    else if (event.code === "BracketRight") brush.set({ radius: Math.min(20, brush.radius + 0.5) });
    else if (event.shiftKey && /^Digit[1-9]$/.test(event.code)) {
      const cls = project.classes[Number(event.code.slice(5)) - 1];
      if (cls) brush.set({ label: cls.value, eraser: false });
    } else if (event.code === "KeyL" && event.shiftKey) setLive(!liveInput.checked);
    else if (event.key === "?") toggleHelp();
    else if (event.key === "Escape" && !help.hidden) toggleHelp(false);
    else handled = false;
    if (handled) {
      event.stopPropagation();
      event.preventDefault();
    }
  }, true);

  // --- start ---------------------------------------------------------------------------------

  async function start() {
    const wanted = new URLSearchParams(location.search).get("project");
    const list = await request("GET", "");
    const chosen = (list.projects || []).find((p) => !wanted || p.id === wanted);
    if (!chosen) {
      root.classList.add("iw-no-project");
      status(wanted ? "no project " + wanted : "no project: browsing only", !!wanted);
      return;
    }
    project.id = chosen.id;
    const restored = IW.restoredView;
    if (restored && typeof restored.activeClass === "number") brush.label = restored.activeClass;
    applyInfo(chosen);
    connect();
    loadFeatures();
    // Layers appear and change with the server's state; keep the checkboxes in step.
    if (IW.onServerState) IW.onServerState(() => setTimeout(renderLayers, 0));
    IW.ready = true;
    for (const fn of readyCallbacks.splice(0)) fn();
  }
  start().catch((e) => status("could not load the project: " + e.message, true));
})();
