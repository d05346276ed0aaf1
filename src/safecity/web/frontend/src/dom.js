// A tiny element builder: h("button", {class: "x", onclick}, "text", child) — text is always set as text, never HTML.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "style" && typeof v === "object") Object.assign(el.style, v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

// Server data shown as is (names, ids, free text): marked so the language test knows it is not UI text.
export function data(text, tag = "span", attrs = {}) {
  return h(tag, { ...attrs, class: `data ${attrs.class || ""}`.trim() }, text ?? "—");
}

export function replace(el, ...children) {
  el.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
}

// Keep `parent`'s children in the order of `items`, one element per key: an element is rebuilt only when its
// signature changed and otherwise stays the same node, so a list updating every second never detaches the row an
// operator is clicking.
export function reconcile(parent, items, keyOf, sigOf, build) {
  const existing = new Map();
  for (const el of parent.children) existing.set(el.dataset.key, el);
  const keep = new Set();
  let prev = null;
  for (const item of items) {
    const key = String(keyOf(item));
    const sig = sigOf(item);
    let el = existing.get(key);
    if (!el || el.dataset.sig !== sig) {
      const fresh = build(item);
      fresh.dataset.key = key;
      fresh.dataset.sig = sig;
      if (el) el.replaceWith(fresh);
      el = fresh;
    }
    keep.add(key);
    const next = prev ? prev.nextSibling : parent.firstChild;
    if (next !== el) parent.insertBefore(el, next);
    prev = el;
  }
  for (const [key, el] of existing) if (!keep.has(key)) el.remove();
}

// A panel built once and updated in place: {root, ...parts} from `create`, then `update(parts)` on every render.
export function persistent(create) {
  let parts = null;
  return (update) => {
    if (!parts) parts = create();
    update(parts);
    return parts.root;
  };
}
