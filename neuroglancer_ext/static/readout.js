// ilastik-web extension: the class probabilities under the mouse.
//
// Neuroglancer's own value readout of the probabilities layer shows its stored bytes
// (0..255 per channel, unnamed). This section shows, for the voxel under the mouse, each
// class's probability by name and colour, from GET /api/projects/<id>/probabilities
// (which reads the chunks the viewer already drew). One request at a time; the latest
// voxel wins.
(function () {
  "use strict";
  const IW = window.ilastikWeb;
  if (!IW || IW.reloading || !IW.panel) return;
  const ng = IW.ng;
  const { el, section } = IW.panel;

  const where = el("div", { class: "iw-hint", id: "iw-readout-where" }, "move the mouse over the data");
  const rows = el("div", { class: "iw-readout", id: "iw-readout" });
  const box = section("Probabilities here", where, rows);
  box.id = "iw-readout-section";
  box.hidden = true;
  IW.panel.addSection(box);

  const state = (IW.readout = { wanted: null, shown: null, busy: false, last: null });

  function voxelUnderMouse() {
    const mouse = ng.viewer().mouseState;
    if (!mouse || !mouse.active) return null;
    const p = mouse.position;
    if (!p || p.length < 3) return null;
    const v = [0, 1, 2].map((i) => Math.floor(p[i]));
    const shape = IW.project.info && IW.project.info.shape_xyz;
    if (!shape || v.some((c, i) => !Number.isFinite(c) || c < 0 || c >= shape[i])) return null;
    return v;
  }

  function render(data) {
    state.last = data;
    const [x, y, z] = data.position_xyz;
    where.textContent = "x " + x + ", y " + y + ", z " + z + " · generation " + data.generation;
    rows.replaceChildren(...data.classes.map((c) => el("div", {
      class: "iw-bar-row iw-readout-class", "data-value": String(c.value),
      title: c.name + ": " + c.probability.toFixed(4) },
      el("span", { class: "iw-swatch", style: "background:" + (c.color || "#888") }),
      el("span", { class: "iw-bar-name" }, c.name),
      el("span", { class: "iw-readout-value" }, c.probability.toFixed(2)),
      el("span", { class: "iw-bar-track" },
         el("span", { class: "iw-bar", style: "width:" + Math.round(100 * c.probability) +
                      "%;background:" + (c.color || "#48c") })))));
  }

  async function fetchWanted() {
    if (state.busy || !state.wanted) return;
    const voxel = state.wanted;
    const key = voxel.join(",") + "@" + IW.project.info.generation;
    if (key === state.shown) return;
    state.busy = true;
    try {
      const response = await fetch(IW.panel.prefix + "/api/projects/" +
        encodeURIComponent(IW.project.id) + "/probabilities?x=" + voxel[0] + "&y=" + voxel[1] +
        "&z=" + voxel[2]);
      if (response.ok) {
        render(await response.json());
        state.shown = key;
      } else if (response.status === 503) {
        where.textContent = "no classifier yet: paint two classes";
        rows.replaceChildren();
        state.shown = key;
      }
    } catch (e) {
      // the connection notice says what is wrong; try again on the next move
    } finally {
      state.busy = false;
    }
    if (state.wanted && state.wanted.join(",") + "@" + IW.project.info.generation !== state.shown) {
      fetchWanted();
    }
  }

  function onMouse() {
    if (!IW.project.id || !IW.project.info) return;
    if (!(IW.project.info.generation > 0)) {
      // Nothing to ask for (the server would answer 503, a red line in the console).
      where.textContent = "no classifier yet: paint two classes";
      rows.replaceChildren();
      return;
    }
    const voxel = voxelUnderMouse();
    if (!voxel) return;
    state.wanted = voxel;
    fetchWanted();
  }

  IW.panel.whenReady(() => {
    box.hidden = false;
    ng.viewer().mouseState.changed.add(onMouse);
  });
  // A new classifier changes the numbers under a resting mouse too.
  IW.panel.onEvent((event) => {
    if (event.kind === "generation") setTimeout(onMouse, 800);
  });
})();
