// The Meridian console: pages drawn from this node's JSON API, their state in the URL so every
// page is a link. Agent data comes from third parties: it is only ever set as text, never as
// markup. No secret is kept anywhere.

import { el, table } from "./common.js";

const view = document.getElementById("view");
const params = new URLSearchParams(location.search);

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

// Searches started, so an answer that arrives after a newer one is dropped.
let searches = 0;

async function searchPage() {
  const q = params.get("q") ?? "";
  const search = ++searches;
  const query = new URLSearchParams({ limit: "20", facets: "org,region,skill,tag,status,verified" });
  if (q.trim()) {
    query.set("q", q);
    query.set("sort", "relevance");
  }
  for (const name of ["status", "org", "region", "skill", "tag", "verified"]) {
    if (params.get(name)) query.set(name, params.get(name));
  }
  const page = await api(`/api/v1/agents?${query}`);
  if (search !== searches) return;
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
  // For timing the first page (tests/python/bench_console_first_page.py).
  performance.mark("meridian:results");
}

// Counts of every match by organisation, region, tag and status; each value a link that adds
// it to the search (and the one in force a link that takes it away).
const FACET_NAMES = { org: "organisation", verified: "verified domain" };

function facetsAside(facets) {
  const groups = Object.entries(facets).map(([field, buckets]) => {
    const chosen = params.get(field);
    const links = buckets.map(({ value, count }) => {
      const next = new URLSearchParams(params);
      if (chosen === value) next.delete(field); else next.set(field, value);
      const label = `${value} (${count})`;
      return el("li", {}, el("a", { href: `/console/?${next}`, "aria-current": chosen === value ? "true" : null }, chosen === value ? `✕ ${label}` : label));
    });
    return el("div", { class: "facet" }, el("h2", {}, FACET_NAMES[field] ?? field), el("ul", {}, links));
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

function provenanceSection(agent, checked) {
  const p = agent.provenance ?? {};
  const ard = p.ard?.identifier ?? `none: ${p.ard?.why ?? "no verified domain"}`;
  const verify = [
    `meridian agent show ${agent.agent_id} --node ${location.origin}`,
    `curl -s ${location.origin}/api/v1/blocks/${agent.manifest?.cid}  # the signed manifest block`,
    `curl -s "${location.origin}/api/v1/registry/snapshot?publisher=${p.publisher}" -o publisher.car`,
    `meridian snapshot verify publisher.car  # every hash and signature of the publisher's commit ${p.commit ?? ""} (add --root ROOT --attestations DIR under governance)`,
    `# The same in Python, with the meridian package (bindings/python), beside publisher.car:`,
    `import meridian`,
    `block, said = meridian.NodeClient("${location.origin}").current_manifest("${agent.agent_id}")  # hash and signature checked`,
    `snapshot = meridian.Snapshot.open("publisher.car", publisher="${p.publisher}")  # every hash and signature of the commit`,
    `assert snapshot.get("${agent.agent_id}")["cid"] == said["cid"], "the publisher's commit lists another manifest"`,
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
      el("dt", {}, "Vouched for by"), el("dd", {}, (p.vouched_by ?? []).length
        ? el("ul", { class: "plain" }, (p.vouched_by ?? []).map((a) => el("li", {}, el("strong", {}, a.type), " ", el("code", { title: a.id }, short(a.id, 20)))))
        : "nobody: governance is off on this node, or no attestation was issued")),
    ...checkedSection(checked),
    el("h3", {}, "Verify it yourself"),
    el("pre", {}, verify),
  ];
}

// The acceptance rule's verdict and the organisation's keys, as the node checked them now.
function checkedSection(checked) {
  if (!checked) return [];
  const verdict = checked.verdict;
  const keys = checked.keys;
  const history = keys.history.map((h) => el("tr", {},
    el("td", {}, h.change), el("td", {}, h.state),
    el("td", {}, h.key_log ? `leaf ${h.key_log.index} of ${h.key_log.size}` : checked.key_log_required ? "no proof held" : "not required here"),
    el("td", {}, el("code", { title: h.document }, short(h.document, 16)))));
  const bound = keys.binding ? ` (bound ${keys.binding.how === "pinned" ? "by the operator's pin" : "on first use"})` : "";
  return [
    el("h3", {}, "The acceptance rule"),
    el("p", { id: "verdict", class: verdict.accepted ? "" : "error" },
      el("span", { class: `badge ${verdict.accepted ? "up" : "removed"}` }, verdict.accepted ? "accepted" : "refused"),
      verdict.accepted ? " on this node now:" : ` on this node now: ${verdict.reasons.join("; ")}`),
    el("ul", {}, verdict.checks.map((c) => el("li", {}, c))),
    el("h3", {}, "The organisation's keys"),
    el("p", { id: "signer-key" }, keys.signer_current ? "The signing key is one of its current keys" : "The signing key is not among its current keys",
      `${bound}: `, keys.current.length ? keys.current.flatMap((k, i) => (i ? [", ", el("code", {}, k)] : [el("code", {}, k)])) : "none",
      keys.threshold ? ` (rotations need ${keys.threshold})` : ""),
    keys.history.length ? table("Key history", ["Change", "State", "Key log", "Document"], history) : null,
  ];
}

async function agentPage(id) {
  const path = `/api/v1/agents/${id.split("/").map(encodeURIComponent).join("/")}`;
  const [agent, checked] = await Promise.all([api(path), api(`${path}/provenance`).catch(() => null)]);
  const lifecycle = agent.status === "deprecated"
    ? el("p", { class: "badge deprecated", role: "status" },
        "Deprecated by its organisation", agent.superseded_by ? [": use ", agentLink(agent.superseded_by)] : null)
    : null;
  document.title = `${agent.card?.name ?? id} · Meridian`;
  show(el("h1", {}, agent.card?.name ?? id), el("p", { class: "meta" }, id), lifecycle,
    ...cardSection(agent.card ?? {}), ...provenanceSection(agent, checked));
}

// ------------------------------------------------------------------ federation

function ago(unix) {
  if (!unix) return "–";
  const seconds = Math.max(0, Math.round(Date.now() / 1000 - unix));
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  return new Date(unix * 1000).toLocaleString();
}

function short(text, keep = 18) {
  return text && text.length > keep + 3 ? `${text.slice(0, keep)}…` : text ?? "";
}

// A line of the latest sync times (ms), oldest left; drawn as SVG from numbers, not markup.
function sparkline(values, label) {
  const svgNS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(svgNS, "svg");
  const width = 240;
  const height = 40;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("width", String(width));
  svg.setAttribute("height", String(height));
  svg.setAttribute("role", "img");
  svg.setAttribute("class", "sparkline");
  const title = document.createElementNS(svgNS, "title");
  title.textContent = label;
  svg.append(title);
  if (values.length > 0) {
    const max = Math.max(...values, 1);
    const step = values.length > 1 ? width / (values.length - 1) : 0;
    const points = values.map((v, i) => `${(i * step).toFixed(1)},${(height - 2 - (v / max) * (height - 4)).toFixed(1)}`);
    const line = document.createElementNS(svgNS, "polyline");
    line.setAttribute("points", values.length > 1 ? points.join(" ") : `0,${points[0].split(",")[1]} ${width},${points[0].split(",")[1]}`);
    svg.append(line);
  }
  return svg;
}

function median(values) {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

function peerRow(peer) {
  const state = peer.banned_for_secs ? `banned ${peer.banned_for_secs} s` : peer.connected ? "connected" : "disconnected";
  return el("tr", { "data-peer": peer.peer },
    el("td", {}, el("code", { title: peer.peer }, short(peer.peer, 16))),
    el("td", {}, el("code", { title: peer.did ?? "" }, peer.did?.startsWith("hub ") ? peer.did : short(peer.did ?? "–", 24))),
    el("td", {}, el("span", { class: `badge ${peer.banned_for_secs ? "removed" : peer.connected ? "up" : "down"}` }, state)),
    el("td", {}, String(peer.score)),
    el("td", {}, String(peer.inflight)));
}

function headRow(head) {
  const lag = head.lag > 0 ? el("span", { class: "badge deprecated" }, `${head.lag} behind`) : el("span", { class: "badge up" }, "up to date");
  return el("tr", { "data-publisher": head.publisher },
    el("td", {}, el("code", { title: head.publisher }, short(head.publisher, 28)), head.own ? el("span", { class: "meta" }, " (this node)") : null),
    el("td", {}, head.seq === null ? "–" : String(head.seq)),
    el("td", {}, lag),
    el("td", {}, head.own && !head.accepted_at ? "published here" : ago(head.accepted_at)),
    el("td", {}, el("code", { title: head.commit ?? "" }, short(head.commit ?? "–", 16))));
}

function federationSections(fed) {
  const syncs = (fed.syncs ?? []).map((s) => s.ms);
  // The region's hub is one of the engine's peers; name it by its URL.
  const peers = fed.peers.map((peer) => peerRow(peer.peer === "hub" && fed.hub ? { ...peer, did: `hub ${fed.hub.url}` } : peer));
  if (fed.hub && !fed.peers.some((peer) => peer.peer === "hub")) {
    peers.push(peerRow({ peer: "hub", did: `hub ${fed.hub.url}`, connected: false, score: 0, inflight: 0, banned_for_secs: null }));
  }
  const invalid = Object.entries(fed.invalid ?? {}).map(([kind, count]) => `${kind}: ${count}`).join(", ");
  return [
    el("h2", {}, "Peers"),
    fed.mesh ? table("Peers", ["Peer", "Node key", "State", "Score", "Requests"], peers, "No peer connected yet.")
      : el("p", { class: "muted" }, "This node runs without its mesh (mesh.enabled = false): it syncs with nobody."),
    el("h2", {}, "Publishers' heads held here"),
    table("Heads", ["Publisher", "Seq", "Lag", "Accepted", "Commit"], fed.publishers.map(headRow), "No head held yet.", "heads"),
    el("h2", {}, "Convergence"),
    el("p", { id: "syncs" }, sparkline(syncs, `time from first sight to import for the last ${syncs.length} syncs`), " ",
      syncs.length ? `last ${syncs.length} syncs: median ${median(syncs)} ms, slowest ${Math.max(...syncs)} ms (first sight of a head to its verified import)` : "no sync yet"),
    el("h2", {}, "Invalid messages and bans"),
    el("dl", { id: "offenses" },
      el("dt", {}, "Invalid"), el("dd", {}, `${fed.invalid_total}${invalid ? ` (${invalid})` : ""}`),
      el("dt", {}, "Bans"), el("dd", {}, String(fed.bans_total)),
      el("dt", {}, "Snapshots"), el("dd", {}, `${fed.imports.accepted} imported, ${fed.imports.refused} refused, ${fed.imports.abandoned} given up`)),
  ];
}

// Calls `work` once after a burst of calls has settled (events come in bursts).
function debounce(work, ms) {
  let timer = null;
  return () => {
    clearTimeout(timer);
    timer = setTimeout(work, ms);
  };
}

const EVENT_KINDS = ["agent.added", "agent.changed", "agent.deprecated", "agent.removed", "head.accepted",
  "attestation.added", "attestation.revoked", "policy.updated", "root.updated", "org.keys_rotated", "name.conflict", "name.domain",
  "peer.connected", "peer.disconnected", "peer.banned", "publisher.equivocated"];

// The node's event stream, one listener per kind; the browser reconnects by itself.
function listen(kinds, handler) {
  const events = new EventSource("/api/v1/events");
  for (const kind of kinds) {
    events.addEventListener(kind, (event) => handler(kind, JSON.parse(event.data || "{}")));
  }
  return events;
}

async function federationPage() {
  document.getElementById("search").hidden = true;
  document.title = "Federation · Meridian";
  const live = el("div", { id: "federation" }, federationSections(await api("/api/v1/federation")));
  const log = el("ol", { class: "results", id: "events" });
  show(el("h1", {}, "Federation"), live, el("h2", {}, "Changes, live"), log);
  const refresh = debounce(async () => {
    try {
      live.replaceChildren(...federationSections(await api("/api/v1/federation")));
    } catch (error) {
      live.prepend(el("p", { class: "error", role: "alert" }, `Could not refresh: ${error.message}`));
    }
  }, 300);
  listen(EVENT_KINDS, (kind, data) => {
    const what = data.agent_id ? agentLink(data.agent_id) : el("code", {}, data.publisher ?? data.org ?? data.peer ?? data.id ?? String(data.version ?? ""));
    log.prepend(el("li", { "data-kind": kind }, el("strong", {}, kind), " ", what, data.seq ? el("span", { class: "meta" }, ` seq ${data.seq}`) : null,
      el("span", { class: "meta" }, ` · ${new Date().toLocaleTimeString()}`)));
    while (log.children.length > 100) log.lastChild.remove();
    if (kind === "head.accepted" || kind.startsWith("peer.")) refresh();
  });
}

// ------------------------------------------------------------------ governance

// The admin token lives in this variable only: never in the URL, storage or a cookie.
let adminToken = "";

async function adminFetch(path, options = {}) {
  const answer = await fetch(path, { ...options, headers: { ...(options.headers ?? {}), authorization: `Bearer ${adminToken}` } });
  if (!answer.ok) {
    const body = await answer.json().catch(() => ({}));
    throw new Error(body?.error?.message ?? `HTTP ${answer.status}`);
  }
  return answer;
}

function rootSection(root) {
  const roles = Object.entries(root.roles).map(([name, set]) => el("tr", {},
    el("td", {}, name), el("td", {}, `${set.threshold} of ${set.keys.length}`),
    el("td", {}, set.keys.map((k) => el("div", {}, el("code", {}, k))))));
  const history = (root.history ?? []).map((v) => el("li", {}, `v${v.version}: `,
    Object.entries(v.thresholds).map(([r, t]) => `${r} ${t}`).join(", "), el("span", { class: "meta" }, ` · until ${new Date(v.expires_at * 1000).toLocaleDateString()}`)));
  return [
    el("h2", {}, `Trust root v${root.version}`),
    el("p", { class: "meta" }, `expires ${new Date(root.expires_at * 1000).toLocaleString()} · `, el("code", {}, root.id)),
    table("Roles", ["Role", "Threshold", "Keys"], roles),
    history.length > 1 ? [el("h3", {}, "Versions trusted"), el("ol", {}, history)] : null,
  ];
}

function list(values) {
  return values && values.length ? values.join(", ") : "none";
}

function policySection(policy) {
  if (!policy) return [el("h2", {}, "Policy"), el("p", { class: "muted" }, "No policy bundle in force: hubs admit no heads and know no other region.")];
  const tiers = policy.rate_limits.map((t) => el("tr", {}, el("td", {}, el("code", {}, t.scope)), el("td", {}, `${t.requests_per_second}/s`), el("td", {}, String(t.burst))));
  const hubs = policy.hubs.map((h) => el("tr", {}, el("td", {}, h.region), el("td", {}, el("code", {}, h.address)),
    el("td", {}, h.http ? el("a", { href: `${h.http}/console/` }, h.http) : "–")));
  return [
    el("h2", {}, `Policy v${policy.version}`),
    el("p", { class: "meta" }, `issued ${new Date(policy.issued_at * 1000).toLocaleString()}, expires ${new Date(policy.expires_at * 1000).toLocaleString()}`),
    el("dl", {},
      el("dt", {}, "Allowed organisations"), el("dd", {}, policy.allow_orgs.length ? policy.allow_orgs.join(", ") : "any verified"),
      el("dt", {}, "Denied organisations"), el("dd", {}, list(policy.deny_orgs)),
      el("dt", {}, "Denied agents"), el("dd", {}, list(policy.deny_agents)),
      el("dt", {}, "Denied node keys"), el("dd", {}, list(policy.deny_node_keys)),
      el("dt", {}, "Admitted node keys"), el("dd", {}, policy.allow_node_keys.length ? `${policy.allow_node_keys.length} listed` : "any")),
    el("h3", {}, "Rate tiers"), table("Rate tiers", ["Scope", "Rate", "Burst"], tiers, "None: hubs apply their defaults."),
    el("h3", {}, "Hub directory"), table("Hubs", ["Region", "Trunk", "HTTP (console)"], hubs, "No hub listed."),
  ];
}

function orgsSection(orgs) {
  const rows = orgs.map((o) => el("tr", { "data-org": o.org },
    el("td", {}, el("a", { href: `/console/?org=${encodeURIComponent(o.org)}` }, o.org)),
    el("td", {}, el("span", { class: `badge ${o.status === "verified" && !o.denied ? "up" : "removed"}` }, o.denied ? `${o.status}, denied by policy` : o.status)),
    el("td", {}, o.domain ?? "–"),
    el("td", {}, String(o.keys.length)),
    el("td", {}, o.verified_until ? new Date(o.verified_until * 1000).toLocaleDateString() : "–")));
  return [el("h2", {}, "Organisations"), table("Organisations", ["Organisation", "Status", "Domain", "Keys", "Verified until"], rows, "No organisation has an attestation here.", "orgs")];
}

function registrationsSection(threshold) {
  const form = el("form", { id: "admin", class: "inline" },
    el("label", { for: "token" }, "Admin token"),
    el("input", { id: "token", type: "password", autocomplete: "off", spellcheck: "false", placeholder: "paste an admin token" }),
    el("button", { type: "submit" }, "Show registrations"));
  const out = el("div", { id: "registrations" });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    adminToken = document.getElementById("token").value.trim();
    showRegistrations(out, threshold);
  });
  return [el("h2", {}, "Registrations"),
    el("p", { class: "muted" }, "Approval stays an offline, threshold act: the console drafts the approval, attest admins co-sign it with their own keys, and an admin uploads the result. The console never holds a governance key; the token stays in this page's memory."),
    form, out];
}

async function showRegistrations(out, threshold) {
  try {
    const { registrations } = await (await adminFetch("/api/v1/orgs/registrations")).json();
    const rows = registrations.map((r) => el("tr", { "data-registration": r.org },
      el("td", {}, r.org), el("td", {}, r.domain), el("td", {}, r.contact),
      el("td", {}, el("span", { class: `badge ${r.status === "pending" ? "deprecated" : r.status === "approved" ? "up" : "removed"}` }, r.status)),
      el("td", {}, r.status === "pending" ? el("button", { type: "button", "data-draft": r.id }, `Draft approval of ${r.org}`) : "")));
    const list = table("Registrations", ["Organisation", "Domain", "Contact", "Status", ""], rows, "No registration request received.");
    // The draft and the upload form stay as they are when the list is read again.
    if (document.getElementById("upload")) out.firstChild.replaceWith(list);
    else out.replaceChildren(list, el("div", { id: "draft" }), uploadForm());
    for (const button of out.querySelectorAll("button[data-draft]")) {
      const registration = registrations.find((r) => r.id === button.dataset.draft);
      button.addEventListener("click", () => draftApproval(registration, threshold));
    }
  } catch (error) {
    out.replaceChildren(el("p", { class: "error", role: "alert" }, `Could not list registrations: ${error.message}`));
  }
}

async function draftApproval(registration, threshold) {
  const box = document.getElementById("draft");
  try {
    const bytes = await (await adminFetch(`/api/v1/orgs/registrations/${encodeURIComponent(registration.id)}/approval`)).blob();
    const file = `${registration.org}.verified.cbor`;
    const link = el("a", { href: URL.createObjectURL(bytes), download: file, id: "draft-file" }, `Download ${file}`);
    const steps = [
      ...Array.from({ length: threshold }, (_, i) => `meridian attest cosign ${file} --key attest-${i + 1}.key   # attest admin ${i + 1} of ${threshold}`),
      `meridian attest verify ${file} --root root.cbor`,
    ].join("\n");
    box.replaceChildren(el("h3", {}, `Approval of ${registration.org}`),
      el("p", {}, link, ` (unsigned, valid 365 days; keys ${registration.keys.length}, domain ${registration.domain})`),
      el("p", {}, `Each attest admin signs it offline (${threshold} needed), then upload it below:`), el("pre", {}, steps));
  } catch (error) {
    box.replaceChildren(el("p", { class: "error", role: "alert" }, `Could not draft: ${error.message}`));
  }
}

function uploadForm() {
  const form = el("form", { id: "upload", class: "inline" },
    el("label", { for: "document" }, "Co-signed document"),
    el("input", { id: "document", type: "file", accept: ".cbor,application/vnd.ipld.dag-cbor" }),
    el("button", { type: "submit" }, "Upload"));
  const result = el("p", { id: "upload-result", role: "status" });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const file = document.getElementById("document").files[0];
    if (!file) {
      result.textContent = "Choose the co-signed .cbor file first.";
      return;
    }
    result.textContent = "Uploading…";
    result.className = "muted";
    try {
      const answer = await adminFetch("/api/v1/attestations", {
        method: "POST", headers: { "content-type": "application/vnd.ipld.dag-cbor" }, body: await file.arrayBuffer(),
      });
      const body = await answer.json();
      result.textContent = answer.status === 202 ? `Kept: ${body.id} waits for its key-log proof.` : `Accepted: ${body.type} ${body.id}. It takes effect on this node now and travels to its peers.`;
      result.className = "";
    } catch (error) {
      result.textContent = `Refused: ${error.message}`;
      result.className = "error";
    }
  });
  return el("div", {}, form, result);
}

async function governancePage() {
  document.getElementById("search").hidden = true;
  document.title = "Governance · Meridian";
  let root;
  try {
    root = await api("/api/v1/governance/root");
  } catch (error) {
    show(el("h1", {}, "Governance"), el("p", {}, `Governance is off on this node (${error.message}). Agents are listed on their organisation's signature alone; names are bound on first use.`));
    return;
  }
  const policy = await api("/api/v1/governance/policy").catch(() => null);
  const orgs = el("div", { id: "org-list" }, orgsSection((await api("/api/v1/governance/orgs")).orgs));
  const threshold = root.roles.attest?.threshold ?? 1;
  show(el("h1", {}, "Governance"), orgs, ...registrationsSection(threshold), ...rootSection(root), ...policySection(policy));
  const refresh = debounce(async () => {
    orgs.replaceChildren(...orgsSection((await api("/api/v1/governance/orgs")).orgs));
    const out = document.getElementById("registrations");
    if (adminToken && out) showRegistrations(out, threshold);
  }, 200);
  listen(["attestation.added", "attestation.revoked", "org.keys_rotated", "policy.updated", "root.updated"], (kind) => {
    if (kind === "policy.updated" || kind === "root.updated") location.reload();
    else refresh();
  });
}

async function route() {
  try {
    if (params.get("view") === "federation") return await federationPage();
    if (params.get("view") === "governance") return await governancePage();
    if (params.get("agent")) return await agentPage(params.get("agent"));
    // The form shows the search the URL holds (typing then changes both).
    document.getElementById("q").value = params.get("q") ?? "";
    document.getElementById("status").value = params.get("status") ?? "";
    return await searchPage();
  } catch (error) {
    failure(error);
  }
}

// Instant results: on the search page, typing searches (the URL follows, so the page is still
// a link); Enter and the button do the same by loading the page.
function instantSearch() {
  if (params.get("view") || params.get("agent")) return;
  const box = document.getElementById("q");
  const status = document.getElementById("status");
  const again = debounce(() => {
    if (box.value.trim()) params.set("q", box.value); else params.delete("q");
    if (status.value) params.set("status", status.value); else params.delete("status");
    history.replaceState(null, "", `/console/?${params}`);
    searchPage().catch(failure);
  }, 200);
  box.addEventListener("input", again);
  status.addEventListener("change", again);
}

instantSearch();
route();
