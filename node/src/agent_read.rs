//! `meridian agent search|show|call`: the agent commands for people at a terminal, over a
//! node's HTTP API: search the federated view, show one agent with its provenance, and send an
//! agent a message through the node's A2A proxy.

use anyhow::{Context as _, Result, anyhow};
use serde_json::{Value, json};

use crate::command::{Rejected, Report};

/// Most bytes of a node's (or, through the proxy, an agent's) answer a command reads.
pub const ANSWER_BYTES_MAX: usize = 16 * 1024 * 1024;
/// How long a command waits for the node (and, for `call`, the agent) to answer.
const ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Sends one request to a node and returns its JSON answer; a refusal is an error naming the
/// node's reason (a 4xx is the caller's to fix, so it exits 1).
pub fn request_json(
    method: reqwest::Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<String>,
    what: &str,
) -> Result<Value> {
    let bytes = request_bytes(method, url, headers, body, what)?;
    let text = String::from_utf8_lossy(&bytes);
    Ok(serde_json::from_str(&text).unwrap_or_else(|_| json!({ "body": text })))
}

/// Sends one request to a node and returns its answer's bytes (at most
/// [`ANSWER_BYTES_MAX`]); a refusal is an error naming the node's reason, as for
/// [`request_json`].
pub fn request_bytes(
    method: reqwest::Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<String>,
    what: &str,
) -> Result<Vec<u8>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let (status, bytes) = runtime.block_on(async {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(ANSWER_TIMEOUT)
            .build()?;
        let mut request = client.request(method, url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("reaching {url}"))?;
        let status = response.status();
        let bytes = meridian_hub::relay::read_limited(response, ANSWER_BYTES_MAX)
            .await
            .with_context(|| format!("reading the answer of {url}"))?;
        anyhow::Ok((status, bytes))
    })?;
    if !status.is_success() {
        let text = String::from_utf8_lossy(&bytes);
        let answer: Value = serde_json::from_str(&text).unwrap_or_else(|_| json!({ "body": text }));
        let message = answer["error"]["message"]
            .as_str()
            .map_or_else(|| answer.to_string(), str::to_owned);
        let error = anyhow!("{url} refused {what}: HTTP {status}: {message}");
        return Err(if status.is_client_error() {
            Rejected(format!("{error:#}")).into()
        } else {
            error
        });
    }
    Ok(bytes)
}

/// What to search for.
#[derive(Debug, Default)]
pub struct SearchArgs<'a> {
    /// Words.
    pub words: &'a [String],
    /// Filters: `skill`, `tag`, `org`, `region`, `status`.
    pub filters: Vec<(&'static str, &'a str)>,
    /// Page size.
    pub limit: usize,
    /// Rank by relevance (any word) instead of requiring every word.
    pub relevance: bool,
}

/// `meridian agent search`.
pub fn search(node: &str, args: &SearchArgs<'_>) -> Result<Report> {
    let mut url = reqwest::Url::parse(&format!("{}/api/v1/agents", node.trim_end_matches('/')))
        .map_err(|e| Rejected(format!("--node `{node}`: {e}")))?;
    {
        let mut query = url.query_pairs_mut();
        if !args.words.is_empty() {
            query.append_pair("q", &args.words.join(" "));
        }
        for (name, value) in &args.filters {
            query.append_pair(name, value);
        }
        query.append_pair("limit", &args.limit.to_string());
        if args.relevance {
            query.append_pair("sort", "relevance");
        }
    }
    let answer = request_json(reqwest::Method::GET, url.as_str(), &[], None, "the search")?;
    let agents = answer["agents"].as_array().cloned().unwrap_or_default();
    let mut text = String::new();
    for agent in &agents {
        let score = agent["score"]
            .as_u64()
            .map_or_else(String::new, |s| format!("  [{s}]"));
        let status = match agent["status"].as_str() {
            Some("deprecated") => "  (deprecated)",
            _ => "",
        };
        text.push_str(&format!(
            "{:<32} {:<24} {:<10}{score}{status}  {}\n",
            agent["agent_id"].as_str().unwrap_or("?"),
            agent["name"].as_str().unwrap_or(""),
            agent["region"].as_str().unwrap_or(""),
            short(agent["description"].as_str().unwrap_or(""), 60),
        ));
    }
    text.push_str(&match (agents.len(), answer["next_cursor"].as_str()) {
        (0, _) => "no agent matches".to_owned(),
        (n, Some(_)) => format!("{n} shown; more match (raise --limit)"),
        (n, None) => format!("{n} found"),
    });
    Ok(Report { text, json: answer })
}

/// `meridian agent show ORG/NAME`.
pub fn show(node: &str, agent: &str) -> Result<Report> {
    let (org, name) = agent
        .split_once('/')
        .filter(|(o, n)| !o.is_empty() && !n.is_empty() && !n.contains('/'))
        .ok_or_else(|| Rejected(format!("`{agent}` is not ORG/NAME")))?;
    let url = format!("{}/api/v1/agents/{org}/{name}", node.trim_end_matches('/'));
    let answer = request_json(reqwest::Method::GET, &url, &[], None, "the lookup")?;
    let card = &answer["card"];
    let provenance = &answer["provenance"];
    let skills: Vec<String> = card["skills"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["id"].as_str().map(str::to_owned))
        .collect();
    let ard = provenance["ard"]["identifier"].as_str().map_or_else(
        || {
            format!(
                "none ({})",
                provenance["ard"]["why"]
                    .as_str()
                    .unwrap_or("no reason given")
            )
        },
        str::to_owned,
    );
    let status = match (answer["status"].as_str(), answer["superseded_by"].as_str()) {
        (Some("deprecated"), Some(successor)) => {
            format!("\n  DEPRECATED by its organisation: use {successor}")
        }
        (Some("deprecated"), None) => "\n  DEPRECATED by its organisation".to_owned(),
        _ => String::new(),
    };
    let text = format!(
        "{agent}: {} {}{status}\n  {}\n  skills: {}\n  region {}, published by {} (seq {}, commit {})\n  manifest {} signed by {}\n  ARD identifier: {ard}\n  call it: meridian agent call {agent} TEXT --node {node}",
        card["name"].as_str().unwrap_or("?"),
        card["version"].as_str().unwrap_or(""),
        card["description"].as_str().unwrap_or(""),
        if skills.is_empty() {
            "-".to_owned()
        } else {
            skills.join(", ")
        },
        answer["region"].as_str().unwrap_or("?"),
        provenance["publisher"].as_str().unwrap_or("?"),
        provenance["seq"],
        provenance["commit"].as_str().unwrap_or("?"),
        answer["manifest"]["cid"].as_str().unwrap_or("?"),
        answer["manifest"]["signer"].as_str().unwrap_or("?"),
    );
    Ok(Report { text, json: answer })
}

/// `meridian agent call ORG/NAME TEXT`: reads the agent's card through the node to speak its
/// A2A version (v1.0 `SendMessage`, v0.3 `message/send`), sends the message through the node's
/// proxy, and prints the text of the answer.
pub fn call(
    node: &str,
    agent: &str,
    message: &str,
    caller_token: Option<&str>,
    now: i64,
) -> Result<Report> {
    let base = node.trim_end_matches('/');
    let card_url = format!("{base}/a2a/{agent}/.well-known/agent-card.json");
    let card = request_json(
        reqwest::Method::GET,
        &card_url,
        &[],
        None,
        "the card lookup",
    )?;
    let v1 = card.get("supportedInterfaces").is_some();
    let message_id = format!("meridian-cli-{now}");
    let request = if v1 {
        json!({ "jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": { "message": {
            "messageId": message_id, "role": "ROLE_USER", "parts": [{ "text": message }] } } })
    } else {
        json!({ "jsonrpc": "2.0", "id": 1, "method": "message/send", "params": { "message": {
            "messageId": message_id, "role": "user", "parts": [{ "kind": "text", "text": message }] } } })
    };
    let mut headers = vec![("a2a-version", if v1 { "1.0" } else { "0.3" })];
    if let Some(token) = caller_token {
        headers.push(("meridian-caller-token", token));
    }
    let url = format!("{base}/a2a/{agent}");
    let answer = request_json(
        reqwest::Method::POST,
        &url,
        &headers,
        Some(request.to_string()),
        "the call",
    )?;
    if let Some(error) = answer.get("error") {
        return Err(Rejected(format!(
            "{agent} answered with an error: {} ({})",
            error["message"].as_str().unwrap_or("no message"),
            error["code"]
        ))
        .into());
    }
    let mut texts = Vec::new();
    collect_texts(&answer["result"], &mut texts);
    let text = if texts.is_empty() {
        format!("{agent} answered (no text part):\n{:#}", answer["result"])
    } else {
        texts.join("\n")
    };
    Ok(Report { text, json: answer })
}

/// Every `text` member of the answer's parts, in order.
fn collect_texts(value: &Value, texts: &mut Vec<String>) {
    match value {
        Value::Object(object) => {
            if let Some(Value::String(text)) = object.get("text") {
                texts.push(text.clone());
            }
            for (key, inner) in object {
                if key != "text" {
                    collect_texts(inner, texts);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_texts(item, texts)),
        _ => {}
    }
}

fn short(text: &str, chars: usize) -> String {
    if text.chars().count() <= chars {
        return text.to_owned();
    }
    text.chars().take(chars - 1).collect::<String>() + "…"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_of_an_answer_is_found_wherever_the_agent_put_it() {
        let answer = json!({ "task": { "artifacts": [
            { "parts": [{ "text": "first" }, { "data": {} }] },
            { "parts": [{ "kind": "text", "text": "second" }] },
        ] } });
        let mut texts = Vec::new();
        collect_texts(&answer, &mut texts);
        assert_eq!(texts, ["first", "second"]);
        assert_eq!(short("abcdef", 4), "abc…");
        assert_eq!(short("abc", 4), "abc");
    }
}
