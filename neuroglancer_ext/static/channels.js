// ilastik-web extension: the channel panel of multichannel images.
//
// The server shows an image with several channels through a shader with, per channel i, a
// checkbox `show<i>`, a colour `color<i>` and a contrast range `contrast<i>` (percentiles
// of that channel). This section lists them per layer — visibility, colour, low and high —
// and edits the layer's shader controls, so Neuroglancer's own layer panel and this one
// stay in step.
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
          numberInput(range[1], "High end of the contrast range", setRange(1))));
      }
    }
    const focused = body.contains(document.activeElement);
    if (!focused) body.replaceChildren(...rows); // never rebuild under the user's typing
    box.hidden = rows.length === 0;
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
  renderSoon();
  IW.channels = { render };
})();
