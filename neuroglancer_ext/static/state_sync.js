// ilastik-web extension, part 2: server state pushes without view jumps or layer rebuilds,
// and the view kept in the URL.
//
// The stock client applies every state the server pushes with `state.reset()` followed by
// `state.restoreState(pushed)`: all layers are torn down and rebuilt, and the camera jumps
// back to what the client last posted (up to ~100 ms old, or older while a post is in
// flight). The server pushes a new state whenever a label revision or classifier
// generation changes a layer URL, i.e. after every stroke. So `viewer.state`'s reset and
// restoreState are wrapped: a push is merged into the live state instead —
//   * camera and other settings are taken from the push only if the server's copy
//     changed them (another client did), judged against the last state exchanged with the
//     server (pushes received and posts sent, seen through `fetch`);
//   * a layer whose source URL alone changed gets the new version swapped in place
//     (see ng.swapSource); other layer changes rebuild the layer list as before.
// Posts are normalised so a layer that briefly holds two versions is sent with the newest.
//
// URL state: `#iw=<json>` holds the camera, layer visibility/opacity and the active class.
// The stock client switches server sync off for good when a page loads with any hash, so
// a hash present at load is moved to sessionStorage and the page reloaded without it; the
// view is restored from there once the server's first state is in.
(function () {
  "use strict";
  const IW = (window.ilastikWeb = window.ilastikWeb || {});
  const ng = IW.ng;
  const HASH_PREFIX = "#iw=";
  const STASH_KEY = "ilastik-web-view";
  const CAMERA_KEYS = ["position", "crossSectionScale", "crossSectionOrientation",
                       "projectionScale", "projectionOrientation", "crossSectionDepth",
                       "projectionDepth"];

  if (location.hash.length > 1) {
    if (location.hash.startsWith(HASH_PREFIX)) {
      sessionStorage.setItem(STASH_KEY, decodeURIComponent(location.hash.slice(HASH_PREFIX.length)));
    }
    history.replaceState(null, "", location.pathname + location.search);
    location.reload();
    IW.reloading = true;
    return;
  }

  const state = ng.viewer().state;
  const originalReset = state.reset.bind(state);
  const originalRestore = state.restoreState.bind(state);
  let lastExchanged = null; // the last state known to be the server's copy
  let resetPending = false;
  const listeners = [];
  IW.onServerState = (fn) => listeners.push(fn);
  IW.stats = { pushes: 0, merged: 0, rebuilt: 0, swaps: 0 };

  const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

  function sourceUrl(spec) {
    const s = spec && spec.source;
    if (typeof s === "string") return s;
    if (Array.isArray(s)) return sourceUrl({ source: s[s.length - 1] });
    if (s && typeof s === "object") return s.url;
    return undefined;
  }

  function withoutSource(spec) {
    const copy = Object.assign({}, spec);
    delete copy.source;
    return copy;
  }

  /**
   * The [name, new url] pairs if the server's `previous` and `pushed` layer lists pair up by
   * name and differ in source URLs only, else null.
   */
  function sourceOnlyChanges(previous, pushed) {
    if (!Array.isArray(previous) || !Array.isArray(pushed) || previous.length !== pushed.length) {
      return null;
    }
    const changes = [];
    for (let i = 0; i < pushed.length; i++) {
      if (previous[i].name !== pushed[i].name) return null;
      if (!same(withoutSource(previous[i]), withoutSource(pushed[i]))) return null;
      const url = sourceUrl(pushed[i]);
      if (url !== sourceUrl(previous[i])) changes.push([pushed[i].name, url]);
    }
    return changes;
  }

  function mergePush(pushed) {
    const current = state.toJSON();
    const known = lastExchanged;
    // Settings the server did not change keep their local (possibly newer) value.
    const target = Object.assign({}, pushed);
    let keptLocal = false;
    for (const key of state.children.keys()) {
      if (key === "layers") continue;
      if (same(pushed[key], known[key]) && !same(pushed[key], current[key])) {
        keptLocal = true;
        if (current[key] === undefined) delete target[key];
        else target[key] = current[key];
      }
    }
    // Judged against the server's previous copy: the client's own JSON of a layer may
    // spell defaults differently, and local changes not yet posted should survive.
    const changes = sourceOnlyChanges(known.layers, pushed.layers);
    if (changes === null) {
      // Layers added, removed or restyled: rebuild as the stock client does, keeping the view.
      originalReset();
      originalRestore(target);
      IW.stats.rebuilt++;
      return keptLocal;
    }
    for (const [key, child] of state.children) {
      if (key === "layers" || same(target[key], current[key])) continue;
      if (target[key] === undefined) child.reset();
      else child.restoreState(target[key]);
    }
    for (const [name, url] of changes) {
      const managed = ng.managedLayers().find((m) => m.name === name);
      if (managed && url && ng.sourceUrlOf(managed) !== url) {
        ng.swapSource(managed, url, /labels/.test(url) ? 1500 : 20000);
        IW.stats.swaps++;
      }
    }
    IW.stats.merged++;
    return keptLocal;
  }

  state.reset = function () {
    // Only the client's sync calls reset() directly before restoreState(); defer it.
    resetPending = true;
  };
  state.restoreState = function (pushed) {
    const wasReset = resetPending;
    resetPending = false;
    IW.stats.pushes++;
    let keptLocal = false;
    if (!wasReset || lastExchanged === null || state.toJSON().layers === undefined) {
      if (wasReset) originalReset();
      originalRestore(pushed);
    } else {
      try {
        keptLocal = mergePush(pushed);
      } catch (e) {
        console.warn("ilastik-web: merging the server state failed, rebuilding", e);
        originalReset();
        originalRestore(pushed);
      }
    }
    lastExchanged = JSON.parse(JSON.stringify(pushed));
    // The sync marks this state as the server's; post the newer local camera back.
    if (keptLocal) setTimeout(() => state.changed.dispatch(), 0);
    for (const fn of listeners) fn(pushed);
  };

  // Watch (and normalise) what the client posts to /state/<token>.
  const originalFetch = window.fetch.bind(window);
  window.fetch = function (input, init) {
    const url = typeof input === "string" ? input : input && input.url;
    // The server takes state-changing requests only as JSON; the stock client sends its
    // JSON posts as text/plain.
    if (url && /\/(state|action|credentials)\/[^/]+$/.test(url) && init &&
        typeof init.body === "string") {
      const headers = new Headers(init.headers || {});
      if (!headers.has("Content-Type")) headers.set("Content-Type", "application/json");
      init = Object.assign({}, init, { headers });
    }
    if (url && /\/state\/[^/]+$/.test(url) && init && typeof init.body === "string") {
      try {
        const message = JSON.parse(init.body);
        for (const layer of (message.s && message.s.layers) || []) {
          if (Array.isArray(layer.source)) layer.source = layer.source[layer.source.length - 1];
        }
        init = Object.assign({}, init, { body: JSON.stringify(message) });
        const sent = message.s;
        return originalFetch(input, init).then((response) => {
          if (response.status === 200) lastExchanged = sent;
          return response;
        });
      } catch (e) {
        console.warn("ilastik-web: could not inspect a state post", e);
      }
    }
    return originalFetch(input, init);
  };

  // --- the view in the URL -------------------------------------------------------------

  const extraState = {}; // filled by other parts (the active class)
  IW.setUrlExtra = (key, value) => {
    extraState[key] = value;
    scheduleHash();
  };

  function viewSnapshot() {
    const s = state.toJSON();
    const view = {};
    for (const key of CAMERA_KEYS) if (s[key] !== undefined) view[key] = s[key];
    view.layers = {};
    for (const layer of s.layers || []) {
      view.layers[layer.name] = { visible: layer.visible !== false, opacity: layer.opacity };
    }
    Object.assign(view, extraState);
    return view;
  }

  let hashTimer = null;
  function scheduleHash() {
    if (hashTimer !== null) return;
    hashTimer = setTimeout(() => {
      hashTimer = null;
      const text = HASH_PREFIX + encodeURIComponent(JSON.stringify(viewSnapshot()));
      if (location.hash !== text) history.replaceState(null, "", text);
    }, 300);
  }

  let stashed = null;
  try {
    const raw = sessionStorage.getItem(STASH_KEY);
    sessionStorage.removeItem(STASH_KEY);
    if (raw) stashed = JSON.parse(raw);
  } catch (e) {
    console.warn("ilastik-web: ignoring an unreadable view in the URL", e);
  }
  IW.restoredView = stashed;

  /** Apply a saved view (camera, layer visibility/opacity) on top of the live state. */
  function applyView(view) {
    const s = state.toJSON();
    for (const key of CAMERA_KEYS) if (view[key] !== undefined) s[key] = view[key];
    for (const layer of s.layers || []) {
      const saved = view.layers && view.layers[layer.name];
      if (!saved) continue;
      if (saved.visible === false) layer.visible = false;
      else delete layer.visible;
      if (typeof saved.opacity === "number") layer.opacity = saved.opacity;
    }
    originalReset();
    originalRestore(s);
  }

  function startHashTracking() {
    if (stashed !== null) {
      try {
        applyView(stashed);
      } catch (e) {
        console.warn("ilastik-web: could not restore the view from the URL", e);
      }
    }
    state.changed.add(scheduleHash);
    scheduleHash();
    IW.viewReady = true;
  }

  // The view restores once the server's first state (with its layers) is in.
  if ((state.toJSON().layers || []).length > 0) {
    lastExchanged = state.toJSON();
    startHashTracking();
  } else {
    let started = false;
    IW.onServerState(() => {
      if (started) return;
      started = true;
      setTimeout(startHashTracking, 0);
    });
  }
})();
