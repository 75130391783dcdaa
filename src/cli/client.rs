//! A small client of the admin API for the CLI commands.

use anyhow::{Context, anyhow, bail};
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::Value;

use super::Connection;
use deskboot::admin::auth::TOKEN_FILE;
use deskboot::domain::progress::{Line, NDJSON, Stage};

/// Talks to the admin API with the admin token.
pub struct AdminClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

/// A reqwest client that, given `--ca`, trusts that certificate alone;
/// otherwise the system's roots.
fn http_client(connection: &Connection) -> anyhow::Result<reqwest::Client> {
    let Some(ca) = &connection.ca else {
        return Ok(reqwest::Client::new());
    };
    let pem = std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
    let certificate = reqwest::Certificate::from_pem(&pem)
        .with_context(|| format!("{}: not a PEM certificate", ca.display()))?;
    Ok(reqwest::Client::builder()
        .tls_certs_only([certificate])
        .build()?)
}

impl AdminClient {
    /// A client for `connection`, with its token from the flag, the
    /// environment, or the data directory.
    pub fn new(connection: &Connection) -> anyhow::Result<Self> {
        let token = match &connection.token {
            Some(token) => token.clone(),
            None => {
                let path = connection.data.join(TOKEN_FILE);
                std::fs::read_to_string(&path)
                    .with_context(|| {
                        format!(
                            "no admin token: pass --token, set DESKBOOT_ADMIN_TOKEN, or point --data at the server's data directory (cannot read {})",
                            path.display()
                        )
                    })?
                    .trim()
                    .to_string()
            }
        };
        Ok(AdminClient {
            base: connection.server.trim_end_matches('/').to_string(),
            token,
            http: http_client(connection)?,
        })
    }

    /// Sends a request and returns the JSON answer (null for 204).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let text = self.send(method, path, body).await?;
        if text.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).context("the server's answer is not JSON")
    }

    /// Prints the record at `path`.
    pub async fn show(&self, path: &str) -> anyhow::Result<()> {
        print_json(&self.call(Method::GET, path, None).await?)
    }

    /// Applies command-line changes ([`super::patch`]) to the record at
    /// `path` and prints the result.
    pub async fn patch(&self, path: &str, changes: &[String]) -> anyhow::Result<()> {
        let patch = super::patch::merge_patch(changes)?;
        print_json(&self.call(Method::PATCH, path, Some(&patch)).await?)
    }

    /// Deletes the record at `path`, and says so, naming it `what`.
    pub async fn delete(&self, path: &str, what: &str) -> anyhow::Result<()> {
        self.call(Method::DELETE, path, None).await?;
        println!("deleted {what}");
        Ok(())
    }

    /// Sends a text body (a template, a CSV file) and returns the JSON answer.
    pub async fn send_text(
        &self,
        method: Method,
        path: &str,
        body: String,
    ) -> anyhow::Result<Value> {
        let (status, answer) = self.send_text_raw(method, path, body).await?;
        if status.is_success() {
            return Ok(answer);
        }
        let message = answer["error"].as_str().unwrap_or("refused");
        let place = match (answer["line"].as_u64(), answer["column"].as_u64()) {
            (Some(line), Some(column)) => format!(" (line {line}, column {column})"),
            _ => String::new(),
        };
        bail!("{message}{place} ({status})")
    }

    /// Sends a text body and returns the status and JSON answer, whatever the status.
    pub async fn send_text_raw(
        &self,
        method: Method,
        path: &str,
        body: String,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let response = self.execute(self.request(method, path).body(body)).await?;
        let status = response.status();
        let text = response.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// A request to `path` with the admin token.
    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    /// Sends a request; a refused token is an error of its own.
    async fn execute(&self, request: RequestBuilder) -> anyhow::Result<Response> {
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the deskboot server at {}", self.base))?;
        if response.status() == StatusCode::UNAUTHORIZED {
            bail!("the server refused the admin token");
        }
        Ok(response)
    }

    /// Sends a long operation (an import, a restore) asking for its
    /// progress, which it draws as a bar when stderr is a terminal; returns
    /// the answer's status and JSON body, whatever the status.
    pub async fn send_with_progress(
        &self,
        path: &str,
        content_type: &str,
        body: String,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let request = self
            .request(Method::POST, path)
            .header(ACCEPT, NDJSON)
            .header(CONTENT_TYPE, content_type)
            .body(body);
        let mut response = self.execute(request).await?;
        let status = response.status();
        let streamed = response
            .headers()
            .get(CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(NDJSON.as_bytes()));
        if !streamed {
            // Refused before the work began (too large, not UTF-8...).
            let text = response.text().await?;
            return Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)));
        }
        let mut bars = StageBars::new()?;
        let mut pending = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            pending.extend_from_slice(&chunk);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                match serde_json::from_slice(&line).context("a malformed progress line")? {
                    Line::Progress { stage, done, total } => bars.show(stage, done, total),
                    Line::Answer { status, answer } => {
                        bars.clear();
                        return Ok((StatusCode::from_u16(status)?, answer));
                    }
                }
            }
        }
        bars.clear();
        bail!("the server's answer ended before its result")
    }

    /// GETs a path and returns the body as text.
    pub async fn get_text(&self, path: &str) -> anyhow::Result<String> {
        self.send(Method::GET, path, None).await
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<String> {
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = self.execute(request).await?;
        let status = response.status();
        let text = response.text().await?;
        if status.is_success() {
            return Ok(text);
        }
        let detail: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        Err(refusal(status, &detail, &text))
    }
}

/// One progress bar per stage of a long operation, drawn only when stderr
/// is a terminal.
pub(super) struct StageBars {
    style: ProgressStyle,
    current: Option<ProgressBar>,
}

impl StageBars {
    pub(super) fn new() -> anyhow::Result<StageBars> {
        Ok(StageBars {
            style: ProgressStyle::with_template("{msg:>9} [{bar:40}] {pos}/{len}")?,
            current: None,
        })
    }

    /// Shows `done` of `total` in `stage`, replacing the previous stage's bar.
    pub(super) fn show(&mut self, stage: Stage, done: usize, total: usize) {
        let same_stage = self
            .current
            .as_ref()
            .is_some_and(|b| b.message() == stage.name());
        if !same_stage {
            self.clear();
            let bar = ProgressBar::new(total as u64)
                .with_style(self.style.clone())
                .with_message(stage.name());
            self.current = Some(bar);
        }
        if let Some(bar) = &self.current {
            bar.set_position(done as u64);
        }
    }

    pub(super) fn clear(&mut self) {
        if let Some(bar) = self.current.take() {
            bar.finish_and_clear();
        }
    }
}

/// The error for a refused request: the server's message, and the field it names.
pub fn refusal(status: StatusCode, detail: &Value, text: &str) -> anyhow::Error {
    let message = detail["error"].as_str().unwrap_or(text);
    match detail["field"].as_str() {
        Some(field) => anyhow!("{field}: {message} ({status})"),
        None => anyhow!("{message} ({status})"),
    }
}

/// Prints a JSON value for people and scripts alike.
pub fn print_json(value: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
