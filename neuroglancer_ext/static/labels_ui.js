// ilastik-web extension: how the training labels show — their own opacity, filled or as
// outlines, and per-class show/hide — in a "Label display" section of the side panel.
//
// The labels layer is a segmentation layer drawn above the predictions. Its opacity is the
// layer's cross-section alpha; a hidden class is left out of the layer's visible segments
// (with every class shown the visible set is empty, which Neuroglancer draws as "all").
// Outlines are the server's: every labels version is also served with "-outline" appended
// (each panel gets the outline in its own plane), and new versions keep the suffix.
(function () {
  "use strict";
  const IW = window.ilastikWeb;
  if (!IW || IW.reloading || !IW.panel) return;
  const ng = IW.ng;
  const { el, section } = IW.panel;

  const opacity = el("input", { type: "range", min: "0", max: "1", step: "0.05",
                                id: "iw-label-opacity", title: "Opacity of the labels",
                                oninput: (e) => setOpacity(Number(e.target.value)) });
  const OUTLINE = "-outline";
  const outline = el("input", { type: "checkbox", id: "iw-label-outline",
                                title: "Draw the labels as outlines instead of filled",
                                onchange: (e) => setOutline(e.target.checked) });
  const classBox = el("div", { class: "iw-label-classes", id: "iw-label-classes" });
  const box = section("Label display",
    el("div", { class: "iw-row" }, el("label", { for: "iw-label-opacity" }, "Opacity"), opacity),
    el("div", { class: "iw-row" }, el("label", {}, outline, " outlines")),
    classBox);
  box.id = "iw-label-display";
  box.hidden = true;
  IW.panel.addSection(box);
  const hidden = new Set(); // class values the user hid

  function labelsLayer() {
    return IW.labelsLayerId ? ng.layerServing(IW.labelsLayerId) : undefined;
  }
  function displayState() {
    const managed = labelsLayer();
    return managed && managed.layer && managed.layer.displayState;
  }

  function setOpacity(value) {
    const state = displayState();
    if (state && state.selectedAlpha) state.selectedAlpha.value = value;
  }

  function outlined() {
    const managed = labelsLayer();
    const url = managed ? (ng.sourceUrlOf(managed) || "").replace(/\/+$/, "") : "";
    return url.endsWith(OUTLINE);
  }

  function setOutline(on) {
    const managed = labelsLayer();
    if (!managed) return;
    const url = (ng.sourceUrlOf(managed) || "").replace(/\/+$/, "");
    if (!url || url.endsWith(OUTLINE) === on) return;
    ng.swapSource(managed, on ? url + OUTLINE : url.slice(0, -OUTLINE.length), 1500);
  }

  function applyVisibility() {
    const state = displayState();
    if (!state || !state.segmentationGroupState) return;
    const group = state.segmentationGroupState.value;
    const classes = (IW.project && IW.project.classes) || [];
    group.visibleSegments.clear();
    if (group.selectedSegments) group.selectedSegments.clear();
    if (hidden.size === 0) return; // empty visible set: every class shows
    for (const cls of classes) {
      if (!hidden.has(cls.value)) group.visibleSegments.add(BigInt(cls.value));
    }
    if (classes.every((cls) => hidden.has(cls.value))) {
      // nothing visible: an empty set would mean "all", so show an unused id instead
      group.visibleSegments.add(BigInt(2 ** 31));
    }
  }

  let shownKey = "";
  function render() {
    const classes = (IW.project && IW.project.classes) || [];
    const state = displayState();
    box.hidden = !state;
    if (!state) return;
    if (state.selectedAlpha && document.activeElement !== opacity) {
      opacity.value = String(state.selectedAlpha.value);
    }
    outline.checked = outlined();
    const key = JSON.stringify(classes) + JSON.stringify(Array.from(hidden));
    if (key === shownKey) return;
    shownKey = key;
    classBox.replaceChildren(...classes.map((cls) => el("label", { class: "iw-label-class" },
      el("input", { type: "checkbox", "data-value": String(cls.value), checked: !hidden.has(cls.value),
                    onchange: (e) => {
                      if (e.target.checked) hidden.delete(cls.value);
                      else hidden.add(cls.value);
                      applyVisibility();
                      render();
                    } }),
      el("span", { class: "iw-swatch", style: "background:" + cls.color }), " " + cls.name)));
  }

  // The labels layer is rebuilt when the server restyles it: keep the user's choice.
  ng.viewer().layerManager.layersChanged.add(() => {
    if (hidden.size) applyVisibility();
    render();
  });
  IW.panel.whenReady(render);
  setInterval(render, 1000); // classes renamed, recoloured, added elsewhere
  IW.labelDisplay = { hidden, applyVisibility, setOutline, outlined };
})();
