// What the node's and the hub's consoles share: building DOM nodes and tables. Values from
// elsewhere (agents' cards, peers, hubs) are only ever set as text, never as markup.

// An element with attributes (null and undefined ones left out) and children (strings and
// numbers become text).
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null) node.setAttribute(name, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" || typeof child === "number" ? String(child) : child);
  }
  return node;
}

// A table row of cells.
export function row(cells, attrs = {}) {
  return el("tr", attrs, cells.map((cell) => el("td", {}, cell)));
}

// A table with a caption for screen readers, or the `empty` sentence when there are no rows.
export function table(caption, headings, rows, empty, bodyId) {
  if (rows.length === 0 && empty) return el("p", { class: "muted" }, empty);
  return el("table", {},
    el("caption", { class: "sr-only" }, caption),
    el("thead", {}, el("tr", {}, headings.map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", { id: bodyId }, rows));
}
