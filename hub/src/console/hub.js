// The hub console: the trunks to the other regions, the block cache, circuit breakers,
// rate-limit refusals and relays in flight, from GET /v1/stats, read again every few seconds
// (the hub has no event stream). Values are only ever set as text, never as markup.

import { el, row, table } from "./common.js";

const view = document.getElementById("view");
const REFRESH_MS = 3000;

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB"];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return `${value.toFixed(unit ? 1 : 0)} ${units[unit]}`;
}

function ms(value) {
  return value === null || value === undefined ? "–" : `${value.toFixed(value < 10 ? 2 : 0)} ms`;
}

function stateBadge(state) {
  return el("span", { class: `badge ${state}` }, state.replace("_", "-"));
}

function render(stats) {
  const cache = stats.cache;
  const rate = cache.hit_rate === null ? "no lookups yet" : `${(cache.hit_rate * 100).toFixed(1)} %`;
  const trunks = stats.trunks.map((t) => row([
    t.region, stateBadge(t.connected ? "up" : "down"), ms(t.rtt_ms),
    el("code", {}, t.address), t.connected ? "" : `${t.failures} failed${t.retry_in_ms ? `, retry in ${ms(t.retry_in_ms)}` : ""}`,
  ]));
  const breakers = stats.breakers.map((b) => row([
    el("code", {}, b.upstream), stateBadge(b.state), String(b.failures), b.open_for_ms ? `probe in ${ms(b.open_for_ms)}` : "",
  ]));
  const refusals = Object.entries(stats.rate_refusals).sort((a, b) => b[1] - a[1])
    .map(([scope, count]) => row([el("code", {}, scope), String(count)]));
  view.replaceChildren(
    el("h1", {}, `Hub ${stats.region}`),
    el("p", { class: "meta" }, `${stats.did} · up ${Math.round(stats.uptime_secs)} s · ${stats.publishers} publishers mirrored · `,
      stats.governed ? `policy v${stats.policy_version}` : "no governance"),
    el("h2", {}, "Trunks to other regions"),
    table("Trunks", ["Region", "State", "Round trip", "Address", "Note"], trunks,
      "No other region's hub is known (no hub directory in force, and none configured)."),
    el("h2", {}, "Block cache"),
    el("dl", { id: "cache" },
      el("dt", {}, "Hit rate"), el("dd", {}, `${rate} (${cache.hits} hits, ${cache.misses} misses)`),
      el("dt", {}, "Held"), el("dd", {}, `${bytes(cache.bytes)} of ${bytes(cache.capacity_bytes)} in ${cache.blocks} blocks`),
      el("dt", {}, "Fill"), el("dd", {}, el("meter", { min: "0", max: String(cache.capacity_bytes), value: String(cache.bytes), "aria-label": "cache fill" })),
      el("dt", {}, "Turnover"), el("dd", {}, `${cache.evicted} evicted · ${cache.rejected} refused (did not match their CID) · ${bytes(cache.bytes_served)} served`)),
    el("h2", {}, "Circuit breakers"),
    table("Circuit breakers", ["Upstream", "State", "Failures in a row", ""], breakers, "No upstream called yet."),
    stats.breakers_total > stats.breakers.length
      ? el("p", { class: "meta" }, `The ${stats.breakers.length} most troubled of ${stats.breakers_total} upstreams.`)
      : "",
    el("h2", {}, "Rate-limit refusals"),
    table("Refusals by scope", ["Scope", "Refused"], refusals, "None since start."),
    el("h2", {}, "Relays"),
    el("p", { id: "relays" }, `${stats.relays.in_flight} in flight of at most ${stats.relays.max}`),
    el("p", { class: "muted" }, `Read ${new Date().toLocaleTimeString()}; refreshed every ${REFRESH_MS / 1000} s.`));
}

async function refresh() {
  try {
    const answer = await fetch("/v1/stats", { headers: { accept: "application/json" } });
    if (!answer.ok) throw new Error(`HTTP ${answer.status}`);
    render(await answer.json());
  } catch (error) {
    view.replaceChildren(el("p", { class: "error", role: "alert" }, `Could not load the hub's statistics: ${error.message}`));
  }
  setTimeout(refresh, REFRESH_MS);
}

refresh();
