// The Meridian console: pages drawn from this node's JSON API, their state in the URL so every
// page is a link. Agent data comes from third parties: it is only ever set as text, never as
// markup. No secret is kept anywhere.

const view = document.getElementById("view");
const params = new URLSearchParams(location.search);

function el(tag, attrs = {}, ...children) {
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

async function api(path) {
  const answer = await fetch(path, { headers: { accept: "application/json" } });
  const body = await answer.json().catch(() => ({}));
  if (!answer.ok) {
    const message = body?.error?.message ?? `HTTP ${answer.status}`;
    throw new Error(message);
  }
  return body;
}

function show(...nodes) {
  view.replaceChildren(...nodes.flat().filter((node) => node !== null && node !== undefined));
}

function failure(error) {
  show(el("p", { class: "error", role: "alert" }, `Could not load: ${error.message}`));
}

function statusBadge(status) {
  return status && status !== "active" ? el("span", { class: `badge ${status}` }, status) : null;
}

function agentLink(id, text) {
  return el("a", { href: `/console/?agent=${encodeURIComponent(id)}` }, text ?? id);
}

async function searchPage() {
  const q = params.get("q") ?? "";
  const status = params.get("status") ?? "";
  document.getElementById("q").value = q;
  document.getElementById("status").value = status;
  const query = new URLSearchParams({ limit: "20", facets: "org,region,tag,status" });
  if (q.trim()) {
    query.set("q", q);
    query.set("sort", "relevance");
  }
  for (const name of ["status", "org", "region", "tag"]) {
    if (params.get(name)) query.set(name, params.get(name));
  }
  const page = await api(`/api/v1/agents?${query}`);
  const refine = facetsAside(page.facets ?? {});
  const agents = page.agents ?? [];
  const heading = q.trim() ? `Agents matching “${q}”` : "Agents";
  if (agents.length === 0) {
    show(el("h1", {}, heading), refine, el("p", {}, "No agent matches."));
    return;
  }
  const items = agents.map((agent) =>
    el("li", {},
      agentLink(agent.agent_id, agent.name || agent.agent_id), " ", statusBadge(agent.status),
      agent.score ? el("span", { class: "meta" }, ` score ${agent.score}`) : null,
      el("div", {}, agent.description ?? ""),
      el("div", { class: "meta" }, `${agent.agent_id} · ${agent.org} · ${agent.region} · published by ${agent.publisher} (seq ${agent.seq})`)));
  show(el("h1", {}, heading), refine, el("ol", { class: "results" }, items),
    page.next_cursor ? el("p", { class: "muted" }, "More agents match: refine the search.") : null);
}

// Counts of every match by organisation, region, tag and status; each value a link that adds
// it to the search (and the one in force a link that takes it away).
function facetsAside(facets) {
  const groups = Object.entries(facets).map(([field, buckets]) => {
    const chosen = params.get(field);
    const links = buckets.map(({ value, count }) => {
      const next = new URLSearchParams(params);
      if (chosen === value) next.delete(field); else next.set(field, value);
      const label = `${value} (${count})`;
      return el("li", {}, el("a", { href: `/console/?${next}`, "aria-current": chosen === value ? "true" : null }, chosen === value ? `✕ ${label}` : label));
    });
    return el("div", { class: "facet" }, el("h2", {}, field), el("ul", {}, links));
  });
  return groups.length ? el("nav", { class: "facets", "aria-label": "Refine" }, groups) : null;
}

function cardSection(card) {
  const skills = (card.skills ?? []).map((skill) =>
    el("li", {}, el("strong", {}, skill.name ?? skill.id ?? "skill"), " ",
      el("span", { class: "meta" }, (skill.tags ?? []).join(", ")),
      skill.description ? el("div", {}, skill.description) : null,
      (skill.examples ?? []).length ? el("div", { class: "muted" }, `e.g. ${(skill.examples ?? []).join(" · ")}`) : null));
  const interfaces = (card.supportedInterfaces ?? (card.url ? [{ url: card.url, protocolBinding: card.preferredTransport ?? "JSONRPC" }] : []))
    .map((i) => el("li", {}, `${i.protocolBinding ?? i.transport ?? "JSONRPC"}: `, el("code", {}, i.url ?? "")));
  return [
    el("h2", {}, "Card"),
    el("p", {}, card.description ?? ""),
    el("dl", {},
      el("dt", {}, "Version"), el("dd", {}, card.version ?? "–"),
      el("dt", {}, "Input modes"), el("dd", {}, (card.defaultInputModes ?? []).join(", ") || "–"),
      el("dt", {}, "Output modes"), el("dd", {}, (card.defaultOutputModes ?? []).join(", ") || "–"),
      el("dt", {}, "Streaming"), el("dd", {}, card.capabilities?.streaming ? "yes" : "no")),
    el("h3", {}, "Skills"), el("ul", {}, skills),
    el("h3", {}, "Interfaces (as published)"), el("ul", {}, interfaces),
  ];
}

function provenanceSection(agent) {
  const p = agent.provenance ?? {};
  const ard = p.ard?.identifier ?? `none: ${p.ard?.why ?? "no verified domain"}`;
  const verify = [
    `meridian agent show ${agent.agent_id} --node ${location.origin}`,
    `curl -s ${location.origin}/api/v1/blocks/${agent.manifest?.cid}  # the signed manifest block`,
    `# Python: meridian.NodeClient("${location.origin}").current_manifest("${agent.agent_id}")`,
  ].join("\n");
  return [
    el("h2", {}, "Provenance you can check"),
    el("dl", {},
      el("dt", {}, "Organisation"), el("dd", {}, agent.org),
      el("dt", {}, "Verified domain"), el("dd", {}, p.domain ?? "none"),
      el("dt", {}, "ARD identifier"), el("dd", {}, ard),
      el("dt", {}, "Signed by"), el("dd", {}, el("code", {}, agent.manifest?.signer ?? "?")),
      el("dt", {}, "Manifest"), el("dd", {}, el("code", {}, agent.manifest?.cid ?? "?")),
      el("dt", {}, "Publisher node"), el("dd", {}, el("code", {}, p.publisher ?? "?")),
      el("dt", {}, "Commit, seq"), el("dd", {}, el("code", {}, `${p.commit ?? "?"}`), ` seq ${p.seq ?? "?"}`),
      el("dt", {}, "Attestations"), el("dd", {}, (p.attestations ?? []).length ? (p.attestations ?? []).join(", ") : "none (governance off, or none issued)")),
    el("h3", {}, "Verify it yourself"),
    el("pre", {}, verify),
  ];
}

async function agentPage(id) {
  const agent = await api(`/api/v1/agents/${id.split("/").map(encodeURIComponent).join("/")}`);
  const lifecycle = agent.status === "deprecated"
    ? el("p", { class: "badge deprecated", role: "status" },
        "Deprecated by its organisation", agent.superseded_by ? [": use ", agentLink(agent.superseded_by)] : null)
    : null;
  document.title = `${agent.card?.name ?? id} · Meridian`;
  show(el("h1", {}, agent.card?.name ?? id), el("p", { class: "meta" }, id), lifecycle,
    ...cardSection(agent.card ?? {}), ...provenanceSection(agent));
}

async function federationPage() {
  document.getElementById("search").hidden = true;
  const heads = (await api("/api/v1/registry/heads")).heads ?? [];
  const rows = heads.map((h) => el("tr", {}, el("td", {}, el("code", {}, h.publisher)), el("td", {}, h.seq), el("td", {}, el("code", {}, h.commit))));
  const log = el("ol", { class: "results", "aria-live": "polite" });
  show(el("h1", {}, "Federation"),
    el("h2", {}, "Publishers' heads held here"),
    el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "Publisher"), el("th", {}, "Seq"), el("th", {}, "Commit"))), el("tbody", { id: "heads" }, rows)),
    el("h2", {}, "Changes, live"), log);
  const events = new EventSource("/api/v1/events");
  const kinds = ["agent.added", "agent.changed", "agent.deprecated", "agent.removed", "head.accepted",
    "attestation.added", "attestation.revoked", "policy.updated", "root.updated", "name.conflict", "name.domain"];
  for (const kind of kinds) {
    events.addEventListener(kind, (event) => {
      const data = JSON.parse(event.data || "{}");
      const what = data.agent_id ? agentLink(data.agent_id) : el("code", {}, data.publisher ?? data.org ?? data.id ?? data.version ?? "");
      log.prepend(el("li", { "data-kind": kind }, el("strong", {}, kind), " ", what, data.seq ? el("span", { class: "meta" }, ` seq ${data.seq}`) : null));
      while (log.children.length > 100) log.lastChild.remove();
    });
  }
}

async function route() {
  try {
    if (params.get("view") === "federation") return await federationPage();
    if (params.get("agent")) return await agentPage(params.get("agent"));
    return await searchPage();
  } catch (error) {
    failure(error);
  }
}

route();
