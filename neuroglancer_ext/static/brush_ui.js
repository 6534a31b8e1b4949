// ilastik-web extension: what the brush is doing, always in sight, and kept across reloads.
//
// A badge over the viewer shows paint mode (class, colour, radius, eraser) while it is on,
// so a second P press that turns it off is never silent. The brush radius, paint mode and
// eraser are stored in localStorage and restored when the page loads.
(function () {
  "use strict";
  const IW = window.ilastikWeb;
  if (!IW || IW.reloading || !IW.brush) return;
  const brush = IW.brush;
  const STORE_KEY = "ilastik-web-brush";

  try {
    const saved = JSON.parse(localStorage.getItem(STORE_KEY) || "null");
    if (saved && typeof saved === "object") {
      const restored = {};
      if (typeof saved.radius === "number" && saved.radius >= 0.5 && saved.radius <= 20) {
        restored.radius = saved.radius;
      }
      if (typeof saved.paintMode === "boolean") restored.paintMode = saved.paintMode;
      if (typeof saved.eraser === "boolean") restored.eraser = saved.eraser;
      brush.set(restored);
    }
  } catch (e) {
    console.warn("ilastik-web: ignoring an unreadable saved brush", e);
  }

  const badge = document.createElement("div");
  badge.className = "iw-mode-badge";
  badge.id = "iw-mode-badge";
  badge.hidden = true;
  document.body.appendChild(badge);

  function className() {
    const project = IW.project;
    const cls = project && project.classes.find((c) => c.value === brush.label);
    return cls ? cls.name : "class " + brush.label;
  }

  function update() {
    badge.hidden = !brush.paintMode;
    if (brush.paintMode) {
      badge.textContent = (brush.eraser ? "ERASING" : "PAINTING " + className()) +
        " · radius " + brush.radius + " · P to stop";
      badge.style.borderColor = brush.eraser ? "#fff" : brush.color;
    }
    try {
      localStorage.setItem(STORE_KEY, JSON.stringify(
        { radius: brush.radius, paintMode: brush.paintMode, eraser: brush.eraser }));
    } catch (e) {
      // storage full or disabled: the brush still works, it is just not remembered
    }
  }
  brush.onChange.push(update);
  update();
})();
