// ilastik-web extension: the channel panel of multichannel images.
//
// The server shows an image with several channels through a shader with, per channel i, a
// checkbox `show<i>`, a colour `color<i>` and a contrast range `contrast<i>` (percentiles
// of that channel). This section lists them per layer — visibility, colour, low and high —
// and edits the layer's shader controls, so Neuroglancer's own layer panel and this one
// stay in step. On the project's raw layer each row also has ilastik's choice of the
// channels that feed the features ("features" checkbox; PUT .../feature_channels): the
// next training, the live predictions and batch exports use only the chosen channels.
(function () {
  "use strict";
  const IW = window.ilastikWeb;
  if (!IW || IW.reloading || !IW.panel) return;
  const ng = IW.ng;
  const { el, section } = IW.panel;

  const body = el("div", { class: "iw-channels", id: "iw-channel-list" });
  const box = section("Channels", body);
  box.id = "iw-channels";
  box.hidden = true;
  IW.panel.addSection(box);
  const watched = new WeakSet();
  const featureNote = el("div", { class: "iw-hint", id: "iw-feature-channels" });
  box.appendChild(featureNote);
  let pending = false; // a channel choice on its way to the server

  /** The channels that feed the features: [] while unknown (no project). */
  function featureChannels() {
    const f = IW.project && IW.project.features;
    return (f && Array.isArray(f.channels)) ? f.channels : [];
  }
  function rawLayer() {
    const info = IW.project && IW.project.info;
    const raw = info && info.layers && info.layers.raw;
    return raw ? ng.layerServing(raw.id) : null;
  }

  async function setFeatureChannel(channel, on) {
    const chosen = new Set(featureChannels());
    if (on) chosen.add(channel);
    else chosen.delete(channel);
    pending = true;
    try {
      IW.project.features = await IW.panel.request(
        "PUT", "/" + encodeURIComponent(IW.project.id) + "/feature_channels",
        { channels: Array.from(chosen).sort((a, b) => a - b) });
      IW.panel.status("features from channel" + (chosen.size > 1 ? "s " : " ") +
                      IW.project.features.channels.join(", ") + " (retraining)");
    } catch (e) {
      // the server's reason (e.g. at least one channel) is in the status line
    } finally {
      pending = false;
      render();
    }
  }

  const toHex = (rgb) => "#" + Array.from(rgb).slice(0, 3).map((v) =>
    Math.round(Math.max(0, Math.min(1, v)) * 255).toString(16).padStart(2, "0")).join("");
  const fromHex = (hex) => new Float32Array([1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16) / 255));

  function channelsOf(controls) {
    const out = [];
    for (const name of controls.names()) {
      const m = /^show(\d+)$/.exec(name);
      if (m && controls.names().includes("contrast" + m[1])) out.push(Number(m[1]));
    }
    return out.sort((a, b) => a - b);
  }

  function numberInput(value, title, onchange) {
    return el("input", { type: "number", value: String(value), title, step: "any",
                         class: "iw-channel-range", onchange });
  }

  function render() {
    const rows = [];
    for (const managed of ng.managedLayers()) {
      const controls = ng.shaderControlsOf(managed);
      if (!controls) continue;
      if (!watched.has(controls.changed)) {
        watched.add(controls.changed);
        controls.changed.add(renderSoon);
      }
      const channels = channelsOf(controls);
      if (channels.length === 0) continue;
      rows.push(el("div", { class: "iw-channel-layer" }, managed.name));
      const feeds = managed === rawLayer() && featureChannels().length > 0;
      for (const i of channels) {
        const contrast = controls.get("contrast" + i) || {};
        const range = Array.isArray(contrast.range) ? contrast.range.map(Number) : [0, 1];
        const setRange = (index) => (e) => {
          const value = Number(e.target.value);
          if (!Number.isFinite(value)) return;
          const now = controls.get("contrast" + i);
          const next = Array.from(now.range);
          next[index] = value;
          controls.set("contrast" + i, Object.assign({}, now, { range: next }));
        };
        rows.push(el("div", { class: "iw-row iw-channel", "data-layer": managed.name,
                              "data-channel": String(i) },
          el("input", { type: "checkbox", class: "iw-channel-show", title: "Show channel " + i,
                        checked: !!controls.get("show" + i),
                        onchange: (e) => controls.set("show" + i, e.target.checked) }),
          el("input", { type: "color", class: "iw-channel-color", title: "Colour",
                        value: toHex(controls.get("color" + i) || [1, 1, 1]),
                        onchange: (e) => controls.set("color" + i, fromHex(e.target.value)) }),
          el("span", { class: "iw-channel-name" }, "ch " + i),
          numberInput(range[0], "Low end of the contrast range", setRange(0)),
          numberInput(range[1], "High end of the contrast range", setRange(1)),
          ...(feeds ? [el("label", { class: "iw-channel-feature-label",
                                     title: "This channel feeds the features (training, " +
                                            "predictions and exports)" },
            el("input", { type: "checkbox", class: "iw-channel-feature", disabled: pending,
                          checked: featureChannels().includes(i),
                          onchange: (e) => setFeatureChannel(i, e.target.checked) }),
            " features")] : [])));
      }
    }
    const focused = body.contains(document.activeElement) &&
      document.activeElement.type !== "checkbox";
    if (!focused) body.replaceChildren(...rows); // never rebuild under the user's typing
    box.hidden = rows.length === 0;
    const chosen = featureChannels();
    featureNote.hidden = !rawLayer() || chosen.length === 0;
    featureNote.textContent = "Features from channel" + (chosen.length > 1 ? "s " : " ") +
      chosen.join(", ");
  }

  let timer = null;
  function renderSoon() {
    if (timer !== null) return;
    timer = setTimeout(() => {
      timer = null;
      render();
    }, 100);
  }
  ng.viewer().layerManager.layersChanged.add(renderSoon);
  IW.panel.onEvent((event) => {
    // Another owner's choice (or ours) arrives as a "features" event.
    if (event.kind !== "features" && event.kind !== "hello") return;
    IW.panel.request("GET", "/" + encodeURIComponent(IW.project.id) + "/features")
      .then((features) => {
        IW.project.features = features;
        renderSoon();
      }).catch(() => {});
  });
  IW.panel.whenReady(renderSoon);
  renderSoon();
  IW.channels = { render };
})();
