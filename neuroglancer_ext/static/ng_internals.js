// ilastik-web extension, part 1: every use of Neuroglancer 2.41.2 internals, in one place.
//
// The stock client exposes `window.viewer` but no extension API, so the brush and the live
// layer swaps reach into internal objects. All of those reads live here, and
// `ilastikWeb.ng.checkInternals()` lists what is missing: the browser tests call it, so an
// upgrade of the `neuroglancer` package that moves these internals fails loudly.
(function () {
  "use strict";
  const IW = (window.ilastikWeb = window.ilastikWeb || {});
  const NEUROGLANCER_VERSION = "2.41.2";

  function viewer() {
    return window.viewer;
  }

  /** The rendered panels (cross sections and 3D view) currently on screen. */
  function panels() {
    return Array.from(viewer().display.panels);
  }

  /** The cross-section panel whose element is (or contains) `element`, if any. */
  function slicePanelOf(element) {
    const host = element && element.closest ? element.closest(".neuroglancer-rendered-data-panel") : null;
    if (!host) return null;
    for (const panel of panels()) {
      if (panel.element === host && panel.sliceView !== undefined) return panel;
    }
    return null;
  }

  function sliceProjection(panel) {
    return panel.sliceView.projectionParameters.value;
  }

  /** "xy", "xz", "yz" for an axis-aligned cross-section, else "3d" (oblique). */
  function planeOf(panel) {
    const n = sliceProjection(panel).viewportNormalInGlobalCoordinates;
    const a = [Math.abs(n[0]), Math.abs(n[1]), Math.abs(n[2])];
    const tol = 1e-3 * Math.max(a[0], a[1], a[2]);
    if (a[0] <= tol && a[1] <= tol) return "xy";
    if (a[0] <= tol && a[2] <= tol) return "xz";
    if (a[1] <= tol && a[2] <= tol) return "yz";
    return "3d";
  }

  /** Voxel position (x, y, z; centres at +0.5) under the mouse at client point (cx, cy). */
  function voxelAt(panel, clientX, clientY) {
    panel.handleMouseMove(clientX, clientY);
    const mouse = viewer().mouseState;
    if (!mouse.updateUnconditionally()) return null;
    const p = mouse.position;
    if (!p || p.length < 3) return null;
    return [p[0], p[1], p[2]];
  }

  /** Screen point (CSS pixels, relative to the panel element) of voxel point `xyz`. */
  function screenOf(panel, xyz) {
    const m = sliceProjection(panel).viewProjectionMat; // column-major 4x4
    const [x, y, z] = xyz;
    const cx = m[0] * x + m[4] * y + m[8] * z + m[12];
    const cy = m[1] * x + m[5] * y + m[9] * z + m[13];
    const cw = m[3] * x + m[7] * y + m[11] * z + m[15];
    const el = panel.element;
    return [((cx / cw + 1) / 2) * el.clientWidth, ((1 - cy / cw) / 2) * el.clientHeight];
  }

  /** The global position (x, y, z) the panel is centred on. */
  function panelCenter(panel) {
    const p = sliceProjection(panel).globalPosition;
    return [p[0], p[1], p[2]];
  }

  function managedLayers() {
    return viewer().layerManager.managedLayers;
  }

  function sourceUrlOf(managed) {
    const layer = managed.layer;
    if (!layer || !layer.dataSources || layer.dataSources.length === 0) return null;
    return layer.dataSources[layer.dataSources.length - 1].spec.url;
  }

  /** The managed layer whose (newest) source serves `layerId`, any version. */
  function layerServing(layerId) {
    const marker = "/precomputed/" + layerId + "/";
    for (const managed of managedLayers()) {
      const url = sourceUrlOf(managed);
      if (url && url.indexOf(marker) !== -1) return managed;
    }
    return null;
  }

  /** Whether every visible cross-section draws `userLayer` completely (all chunks in). */
  function layerDrawn(userLayer) {
    for (const panel of panels()) {
      if (panel.sliceView === undefined || !panel.visible) continue;
      const context = { projectionParameters: sliceProjection(panel), sliceView: panel.sliceView };
      for (const [renderLayer, attachment] of panel.visibleLayerTracker.visibleLayers) {
        if (renderLayer.userLayer !== userLayer) continue;
        if (!renderLayer.isReady(context, attachment)) return false;
      }
    }
    return true;
  }

  /**
   * Point `managed` at `url` without rebuilding the layer: the new version is added as a
   * second data source and the old one is dropped once the new one is drawn (or after
   * `maxWaitMs`), so the layer never blinks out while new chunks load.
   */
  function swapSource(managed, url, maxWaitMs, onDone) {
    const layer = managed.layer;
    const old = layer.dataSources.slice();
    if (old.length === 1 && old[0].spec.url === url) {
      if (onDone) onDone();
      return;
    }
    const base = old[old.length - 1].spec;
    const fresh = layer.addDataSource({
      url: url,
      transform: base.transform,
      enableDefaultSubsources: true,
      subsources: new Map(),
      state: undefined,
    });
    const started = Date.now();
    let wasLoaded = false;
    const finish = () => {
      for (const source of old) {
        if (!source.wasDisposed && layer.dataSources.indexOf(source) !== -1) {
          source.spec = { url: "", transform: undefined, enableDefaultSubsources: true,
                          subsources: new Map(), state: undefined };
        }
      }
      if (onDone) onDone();
    };
    const poll = () => {
      if (fresh.wasDisposed) return;
      const state = fresh.loadState;
      const loaded = state !== undefined && state.error === undefined;
      if (state !== undefined && state.error !== undefined) return finish();
      // Give render layers one frame to attach after loading before asking if they are drawn.
      if (loaded && wasLoaded && layerDrawn(layer)) return finish();
      wasLoaded = loaded;
      if (Date.now() - started > maxWaitMs) return finish();
      setTimeout(poll, 100);
    };
    setTimeout(poll, 50);
  }

  /**
   * The shader controls of an image layer: `{names, get(name), set(name, value), changed}`
   * over the client's ShaderControlState (a control's trackable holds a boolean for a
   * checkbox, an RGB Float32Array for a colour, {range, window, channel} for invlerp), or
   * null for layers without one.
   */
  function shaderControlsOf(managed) {
    const state = managed && managed.layer && managed.layer.shaderControlState;
    if (!state || !state.changed) return null;
    const controls = () => (state.value instanceof Map ? state.value : new Map());
    return {
      names: () => Array.from(controls().keys()),
      get: (name) => {
        const control = controls().get(name);
        return control ? control.trackable.value : undefined;
      },
      set: (name, value) => {
        const control = controls().get(name);
        if (control) control.trackable.value = value;
      },
      changed: state.changed,
    };
  }

  /** What the extension needs from the client, with what is missing (empty: all there). */
  function checkInternals() {
    const missing = [];
    const need = (ok, what) => {
      try {
        if (!ok()) missing.push(what);
      } catch (e) {
        missing.push(what + " (" + e + ")");
      }
    };
    const v = viewer();
    need(() => v !== undefined, "window.viewer");
    if (v === undefined) return missing;
    need(() => v.display && v.display.panels instanceof Set, "viewer.display.panels");
    need(() => typeof v.mouseState.updateUnconditionally === "function",
         "viewer.mouseState.updateUnconditionally");
    need(() => v.mouseState.position !== undefined, "viewer.mouseState.position");
    need(() => typeof v.mouseState.changed.add === "function", "viewer.mouseState.changed");
    need(() => v.layerManager && Array.isArray(v.layerManager.managedLayers),
         "viewer.layerManager.managedLayers");
    need(() => v.state && v.state.children instanceof Map, "viewer.state.children");
    need(() => typeof v.state.restoreState === "function" && typeof v.state.reset === "function",
         "viewer.state.restoreState/reset");
    need(() => v.state.children.has("layers") && v.state.children.has("position") &&
               v.state.children.has("crossSectionScale"), "viewer.state children keys");
    const slices = Array.from(v.display.panels).filter((p) => p.sliceView !== undefined);
    need(() => slices.length > 0, "a cross-section panel with .sliceView");
    for (const p of slices.slice(0, 1)) {
      need(() => typeof p.handleMouseMove === "function", "panel.handleMouseMove");
      need(() => p.element.classList.contains("neuroglancer-rendered-data-panel"),
           "panel.element class");
      need(() => sliceProjection(p).viewProjectionMat.length === 16,
           "projectionParameters.viewProjectionMat");
      need(() => sliceProjection(p).viewportNormalInGlobalCoordinates.length === 3,
           "projectionParameters.viewportNormalInGlobalCoordinates");
      need(() => sliceProjection(p).globalPosition !== undefined,
           "projectionParameters.globalPosition");
      need(() => p.visibleLayerTracker.visibleLayers instanceof Map,
           "panel.visibleLayerTracker.visibleLayers");
    }
    const layers = v.layerManager.managedLayers;
    need(() => layers.length > 0, "at least one layer");
    for (const m of layers.slice(0, 1)) {
      need(() => typeof m.layer.addDataSource === "function", "userLayer.addDataSource");
      need(() => Array.isArray(m.layer.dataSources), "userLayer.dataSources");
      need(() => typeof m.layer.dataSources[0].spec.url === "string", "dataSource.spec.url");
      need(() => typeof m.setVisible === "function", "managedLayer.setVisible");
    }
    return missing;
  }

  IW.ng = {
    version: NEUROGLANCER_VERSION,
    viewer, panels, slicePanelOf, planeOf, voxelAt, screenOf, panelCenter, managedLayers,
    sourceUrlOf, layerServing, layerDrawn, swapSource, shaderControlsOf, checkInternals,
  };
})();
