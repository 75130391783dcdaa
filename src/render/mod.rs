//! Rendering: a template plus a view of one phone's data gives the bytes the
//! phone receives.
//!
//! The view ([`FileView`]) is the contract with template authors, documented
//! in `docs/phone-models.md`. Templates are Tera 2: they have no access to
//! files or the environment, and a template named `*.xml` is escaped for XML.
//!
//! # The render budget
//!
//! An uploaded template is code from whoever holds a write token, so each of
//! its renders has a budget: [`RENDER_TIME`] of CPU time, [`WORKER_MEMORY`]
//! of memory and [`MAX_OUTPUT`] of output. A render over it is stopped and fails
//! with [`RenderError::OverBudget`]: an upload or a restore is refused, a
//! phone gets its last good file.
//!
//! Tera 2.4 cannot keep such a budget by itself. Its bytecode VM has no
//! fuel, step or instruction limit and calls no hook between instructions;
//! it bounds one `range()` to 100,000 items, component recursion to 20
//! levels and refuses include cycles, and our writer caps the output. A
//! loop with an empty body runs none of our code, so two nested loops of
//! 100,000 spin inside Tera where no check can reach them, and a thread
//! cannot be stopped from outside. Rewriting templates to call a budget
//! function in every loop body would still leave straight-line code
//! unbounded: a chain of `~` over a large string, or `set` doubling one,
//! takes minutes and gigabytes between two loop iterations. So uploads
//! render in a child process, a [`sandbox`] worker: the server kills it
//! past its time, the kernel caps its memory, and the thread that waited
//! for it is free at once. The built-in templates and those of
//! `--templates-dir`, installed with the binary by the operator, render in
//! the server's own threads, as cheaply as before: their loops run over a
//! phone's data, which the store bounds.
//!
//! [`sandbox`]: crate::render::sandbox

pub(crate) mod cache;
pub mod memory;
pub mod pool;
pub mod sandbox;
pub(crate) mod served;
pub mod uploaded;

use std::cmp;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use include_dir::{Dir, include_dir};
use serde::Serialize;
use tera::{Context, Kwargs, State, Tera, TeraResult};

use crate::catalog::{Catalog, ModuleSpec, PhoneModel, Vendor};
use crate::domain::mac::Mac;
use crate::domain::records::{Device, EffectiveSettings, KeyType, User};
use crate::domain::time_zone::{self, DaylightSaving};
use crate::render::sandbox::{RENDER_TIME, Sandbox, WORKER_MEMORY, WorkerError};

/// The templates built into the binary.
static BUILTIN_TEMPLATES: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/templates");

/// A template that cannot be loaded or rendered. A render worker sends it
/// to the server as JSON (all but the server's own failures).
#[derive(Debug, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum RenderError {
    /// A syntax or render error, with where it happened.
    #[error("{template}:{line}:{column}: {message}")]
    Template {
        /// The template's name.
        template: String,
        /// The line (from 1).
        line: usize,
        /// The column (from 1).
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// Any other template error (a missing template, a bad context).
    #[error("{0}")]
    Other(String),
    /// A template directory could not be read.
    #[error("cannot read {path}: {source}")]
    #[serde(skip)]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The template was stopped: it went past its render budget.
    #[error("{}: exceeded the render budget: {limit}", shown_name(template))]
    OverBudget {
        /// The template's name.
        template: String,
        /// The part of the budget it went past.
        limit: Limit,
    },
    /// The worker that renders uploads failed, through no fault of the template.
    #[error(transparent)]
    #[serde(skip)]
    Worker(#[from] WorkerError),
}

/// A part of the render budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Limit {
    /// [`RENDER_TIME`].
    Time,
    /// [`WORKER_MEMORY`]: the worker ran out of it, or died otherwise.
    Memory,
    /// [`MAX_OUTPUT`].
    Output,
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Limit::Time => write!(f, "it ran for more than {}", seconds(RENDER_TIME)),
            Limit::Memory => write!(f, "it needed more than {} MiB", WORKER_MEMORY >> 20),
            Limit::Output => write!(f, "it wrote more than {} MiB", MAX_OUTPUT >> 20),
        }
    }
}

fn seconds(time: Duration) -> String {
    format!("{} s", time.as_secs_f64())
}

/// How administrators know a template: an upload by its store key.
fn shown_name(template: &str) -> &str {
    template.strip_prefix(UPLOAD_PREFIX).unwrap_or(template)
}

impl From<tera::Error> for RenderError {
    fn from(e: tera::Error) -> Self {
        // The report with a place may be the error itself or one it wraps
        // (validation errors at add time come wrapped).
        let mut current: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(error) = current {
            if let Some(tera_error) = error.downcast_ref::<tera::Error>()
                && let tera::ErrorKind::SyntaxError(report)
                | tera::ErrorKind::RenderingError(report) = tera_error.kind()
            {
                return RenderError::Template {
                    template: report.filename().to_string(),
                    line: report.span().start_line,
                    column: report.span().start_col + 1,
                    message: report.message().to_string(),
                };
            }
            current = error.source();
        }
        // Checks made when a template is added report as a message that
        // carries the place in a `--> name:line:column` line.
        let text = e.to_string();
        if let Some(place) = text
            .lines()
            .find_map(|l| l.trim_start().strip_prefix("--> "))
        {
            let mut parts = place.rsplitn(3, ':');
            let (column, line, template) = (parts.next(), parts.next(), parts.next());
            if let (Some(Ok(column)), Some(Ok(line)), Some(template)) = (
                column.map(str::parse::<usize>),
                line.map(str::parse::<usize>),
                template,
            ) {
                let first = text.lines().next().unwrap_or_default();
                return RenderError::Template {
                    template: template.to_string(),
                    line,
                    column,
                    message: first.trim_start_matches("error: ").to_string(),
                };
            }
        }
        // The top-level message is often generic; the causes say what went wrong.
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            message = format!("{message}: {cause}");
            source = cause.source();
        }
        RenderError::Other(message)
    }
}

/// The most a template may write for one phone: a config is kilobytes; a
/// template that writes megabytes is a mistake or an attack.
pub const MAX_OUTPUT: usize = 1 << 20;

/// The compiled templates: the built-in ones and the administrators' uploads.
#[derive(Clone)]
pub struct Renderer {
    /// Built-in (and `--templates-dir`) templates only.
    base: Arc<Tera>,
    /// `base` plus every active upload, named `upload/<key>`: uploads are
    /// compiled here, to check them and see what they use, but rendered by
    /// a worker compiling `set`.
    tera: Tera,
    /// The store keys of the active uploads.
    uploads: HashSet<String>,
    /// Every template's source, uploads included.
    set: TemplateSet,
    /// Where uploads render.
    sandbox: Sandbox,
    /// Templates that use the company directory: only they pay for loading it.
    directory_templates: HashSet<String>,
}

/// The sources of every template in force, for a worker to compile. Its id
/// is new with every set of uploads, so a worker knows when to load again.
#[derive(Debug, Clone)]
pub(crate) struct TemplateSet {
    id: u64,
    /// Built-in (and `--templates-dir`) templates: also what an upload replaces.
    base: Arc<BTreeMap<String, String>>,
    /// The active uploads, by Tera name.
    uploads: Arc<Vec<(String, String)>>,
}

impl TemplateSet {
    fn new(base: Arc<BTreeMap<String, String>>, uploads: Vec<(String, String)>) -> Self {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        TemplateSet {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            base,
            uploads: Arc::new(uploads),
        }
    }

    /// Which set this is.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Every template, by name and source.
    pub(crate) fn sources(&self) -> impl Iterator<Item = (&str, &str)> {
        let base = self.base.iter().map(|(n, s)| (n.as_str(), s.as_str()));
        base.chain(self.uploads.iter().map(|(n, s)| (n.as_str(), s.as_str())))
    }
}

impl Renderer {
    /// The built-in templates, plus (replacing same-named ones) the files
    /// under `extra_dir`; uploads will render with `sandbox`'s workers.
    /// Fails if a template does not compile or if a model names a template
    /// that does not exist.
    pub fn load(
        catalog: &Catalog,
        extra_dir: Option<&Path>,
        sandbox: Sandbox,
    ) -> Result<Renderer, RenderError> {
        let mut sources: Vec<(String, String)> = Vec::new();
        collect_builtin(&BUILTIN_TEMPLATES, &mut sources);
        if let Some(dir) = extra_dir {
            collect_dir(dir, dir, &mut sources)?;
        }
        let tera = compile(sources.clone())?;
        for name in catalog.template_names() {
            if !tera.contains_template(name) {
                return Err(RenderError::Other(format!(
                    "template {name} is named by a phone model but does not exist"
                )));
            }
        }
        let renderer = Renderer {
            base: Arc::new(tera.clone()),
            set: TemplateSet::new(Arc::new(sources.into_iter().collect()), Vec::new()),
            sandbox,
            directory_templates: directory_templates(&tera),
            tera,
            uploads: HashSet::new(),
        };
        Ok(renderer)
    }

    /// The built-in templates plus `uploads` (store key, source): the set
    /// in force after an administrator's change. Fails, naming the line, if
    /// an upload does not compile.
    pub fn with_uploads<'s>(
        &self,
        uploads: impl IntoIterator<Item = (&'s str, &'s str)>,
    ) -> Result<Renderer, RenderError> {
        let mut tera = (*self.base).clone();
        let mut keys = HashSet::new();
        let mut named = Vec::new();
        for (key, source) in uploads {
            keys.insert(key.to_string());
            named.push((upload_name(key), source.to_string()));
        }
        tera.add_raw_templates(named.clone())?;
        Ok(Renderer {
            base: self.base.clone(),
            set: TemplateSet::new(self.set.base.clone(), named),
            sandbox: self.sandbox.clone(),
            directory_templates: directory_templates(&tera),
            tera,
            uploads: keys,
        })
    }

    /// Whether `uploads` (store key, source) are exactly the uploads in
    /// force: then a renderer with them would be this one again.
    pub fn has_exactly(&self, uploads: &[(&str, &str)]) -> bool {
        let mut wanted: Vec<(String, &str)> =
            uploads.iter().map(|(k, s)| (upload_name(k), *s)).collect();
        let mut in_force: Vec<(String, &str)> = (self.set.uploads.iter())
            .map(|(n, s)| (n.clone(), s.as_str()))
            .collect();
        wanted.sort_unstable();
        in_force.sort_unstable();
        wanted == in_force
    }

    /// The template to use: the first of `keys` (most specific first) with
    /// an active upload, else the built-in one.
    pub fn pick(&self, keys: &[&str], builtin: &str) -> String {
        keys.iter()
            .find(|key| self.uploads.contains(**key))
            .map(|key| upload_name(key))
            .unwrap_or_else(|| builtin.to_string())
    }

    /// The source of a built-in template.
    pub fn builtin_source(&self, name: &str) -> Option<&str> {
        self.set.base.get(name).map(String::as_str)
    }

    /// Whether a template lists the company directory.
    pub fn uses_directory(&self, template: &str) -> bool {
        self.directory_templates.contains(template)
    }

    /// Renders `template` for `view`, within the render budget for an
    /// upload (which renders in a [`Sandbox`] worker), at most
    /// [`MAX_OUTPUT`] bytes for any template. Blocks for as long as the
    /// render takes: call it off the async workers.
    pub fn render(&self, template: &str, view: &FileView<'_>) -> Result<Vec<u8>, RenderError> {
        if template.starts_with(UPLOAD_PREFIX) {
            return self.sandbox.render(&self.set, template, view);
        }
        render_with(&self.tera, template, &Context::from_serialize(view)?)
    }
}

/// Where uploads are among Tera's templates: no built-in name starts so.
const UPLOAD_PREFIX: &str = "upload/";

/// The Tera name of an uploaded template: its store key keeps the file's
/// extension, so XML uploads are escaped like built-in XML templates.
fn upload_name(key: &str) -> String {
    format!("{UPLOAD_PREFIX}{key}")
}

/// Compiles templates (name, source) with our filters and escaping.
pub(crate) fn compile(
    sources: impl IntoIterator<Item = (String, String)>,
) -> Result<Tera, RenderError> {
    let mut tera = new_tera();
    tera.add_raw_templates(sources)?;
    Ok(tera)
}

/// Renders `template` of `tera`, at most [`MAX_OUTPUT`] bytes.
pub(crate) fn render_with(
    tera: &Tera,
    template: &str,
    context: &Context,
) -> Result<Vec<u8>, RenderError> {
    let mut out = Capped(Vec::with_capacity(4096));
    match tera.render_to(template, context, &mut out) {
        Ok(()) => {
            // Rendered files live on in the cache: keep only their bytes.
            out.0.shrink_to_fit();
            Ok(out.0)
        }
        Err(_) if out.0.len() >= MAX_OUTPUT => Err(RenderError::OverBudget {
            template: template.to_string(),
            limit: Limit::Output,
        }),
        Err(e) => Err(e.into()),
    }
}

fn directory_templates(tera: &Tera) -> HashSet<String> {
    tera.get_template_names()
        .filter(|name| {
            tera.get_template_variables(name)
                .is_ok_and(|vars| vars.contains("directory"))
        })
        .map(str::to_string)
        .collect()
}

/// A buffer that refuses to grow past [`MAX_OUTPUT`].
struct Capped(Vec<u8>);

impl Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > MAX_OUTPUT {
            self.0.resize(MAX_OUTPUT, 0);
            return Err(std::io::Error::other("output too large"));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn new_tera() -> Tera {
    let mut tera = Tera::new();
    tera.register_filter("cfg_value", cfg_value);
    tera.register_filter("xml_escape", xml_escape_filter);
    tera.set_escape_fn(write_xml_escaped);
    tera.autoescape_on([".xml"]);
    tera
}

fn collect_builtin(dir: &Dir<'_>, out: &mut Vec<(String, String)>) {
    for file in dir.files() {
        if let Some(text) = file.contents_utf8() {
            out.push((file.path().to_string_lossy().into_owned(), text.to_string()));
        }
    }
    for sub in dir.dirs() {
        collect_builtin(sub, out);
    }
}

fn collect_dir(
    root: &Path,
    dir: &Path,
    out: &mut Vec<(String, String)>,
) -> Result<(), RenderError> {
    let io = |source| RenderError::Io {
        path: dir.display().to_string(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.is_dir() {
            collect_dir(root, &path, out)?;
        } else {
            let text = std::fs::read_to_string(&path).map_err(io)?;
            let name = path.strip_prefix(root).unwrap_or(&path);
            let name = name.to_string_lossy().replace('\\', "/");
            out.retain(|(existing, _)| *existing != name);
            out.push((name, text));
        }
    }
    Ok(())
}

/// `{{ value | cfg_value }}`: refuses a value with a line break, which in a
/// key=value file would start a setting of its own.
fn cfg_value(value: &str, _: Kwargs, _: &State) -> TeraResult<String> {
    if value.contains(['\r', '\n', '\0']) {
        return Err(tera::Error::message("value contains a line break"));
    }
    Ok(value.to_string())
}

fn xml_escape_filter(value: &str, _: Kwargs, _: &State) -> String {
    let mut out = Vec::with_capacity(value.len());
    // Writing into a Vec cannot fail.
    let _ = write_xml_escaped(value, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// XML escaping for `*.xml` templates. Unlike HTML escaping it leaves `/`
/// alone: phones' small XML parsers choke on `&#x2F;` in URLs.
fn write_xml_escaped(input: &str, out: &mut dyn Write) -> std::io::Result<()> {
    for c in input.chars() {
        match c {
            '&' => out.write_all(b"&amp;")?,
            '<' => out.write_all(b"&lt;")?,
            '>' => out.write_all(b"&gt;")?,
            '"' => out.write_all(b"&quot;")?,
            '\'' => out.write_all(b"&apos;")?,
            c => write!(out, "{c}")?,
        }
    }
    Ok(())
}

/// Everything a template sees (see `docs/phone-models.md`).
#[derive(Debug, Serialize)]
pub struct FileView<'a> {
    model: ModelView<'a>,
    settings: &'a EffectiveSettings,
    tz: TzView<'a>,
    firmware: FirmwareView<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mac: Option<MacView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lines: Option<Vec<LineView<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    keys: Option<Vec<KeyView<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    modules: Option<Vec<ModuleView<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    directory: Option<Vec<DirectoryEntry<'a>>>,
}

/// The firmware the phone should run, and whether to point it there.
#[derive(Debug, Serialize)]
struct FirmwareView<'a> {
    url: Option<&'a str>,
    version: Option<&'a str>,
    /// True when an image is set and the phone reports an older version
    /// than the pinned one (or a newer one, with a downgrade pinned), or we
    /// do not know what it runs: a phone on the pinned version, however its
    /// family spells it, is never sent round an upgrade loop.
    upgrade: bool,
}

impl<'a> FirmwareView<'a> {
    fn new(model: &PhoneModel, settings: &'a EffectiveSettings, reported: Option<&str>) -> Self {
        let version = settings.firmware_version.as_deref();
        let wanted = match (version, reported) {
            (Some(pinned), Some(reported)) => {
                match model.firmware_numbers.compare(reported, pinned) {
                    Some(cmp::Ordering::Less) => true,
                    Some(cmp::Ordering::Equal) => false,
                    Some(cmp::Ordering::Greater) => settings.firmware_downgrade,
                    // No numbers to go by: only the same spelling is the same.
                    None => reported != pinned,
                }
            }
            _ => true,
        };
        FirmwareView {
            url: settings.firmware_url.as_deref(),
            version,
            upgrade: settings.firmware_url.is_some() && wanted,
        }
    }
}

#[derive(Debug, Serialize)]
struct ModuleView<'a> {
    index: usize,
    id: &'a str,
    name: &'a str,
    keys: u16,
    pages: u16,
}

/// One person in the company directory.
#[derive(Debug, Serialize)]
pub struct DirectoryEntry<'a> {
    name: String,
    first_name: &'a str,
    last_name: &'a str,
    extension: &'a str,
    mobile: Option<&'a str>,
}

/// The company directory: users listed in it, sorted by name.
pub fn directory(users: &[User]) -> Vec<DirectoryEntry<'_>> {
    let mut entries: Vec<DirectoryEntry<'_>> = users
        .iter()
        .filter(|u| u.in_directory)
        .map(|u| DirectoryEntry {
            name: u.display_name(),
            first_name: &u.first_name,
            last_name: &u.last_name,
            extension: &u.extension,
            mobile: u.mobile.as_deref(),
        })
        .collect();
    entries.sort_by_key(|e| e.name.to_lowercase());
    entries
}

#[derive(Debug, Serialize)]
struct ModelView<'a> {
    id: &'a str,
    vendor: &'a str,
    name: &'a str,
    accounts: u16,
    line_keys: u16,
    vars: &'a std::collections::BTreeMap<String, String>,
}

/// The site's time: the offset to show now at the top, for phones that take
/// no rule; the standard offset, the daylight-saving rule and the POSIX
/// zone for phones that switch by themselves.
#[derive(Debug, Serialize)]
struct TzView<'a> {
    #[serde(flatten)]
    now: OffsetView,
    std: OffsetView,
    dst: Option<&'a DaylightSaving>,
    posix: String,
}

/// One UTC offset in each vendor's form.
#[derive(Debug, Serialize)]
struct OffsetView {
    minutes: i32,
    seconds: i32,
    hours: String,
    gmt: String,
    sign_hhmm: String,
}

#[derive(Debug, Serialize)]
struct MacView {
    bare: String,
    upper: String,
    colon: String,
    colon_upper: String,
}

#[derive(Debug, Serialize)]
struct LineView<'a> {
    index: usize,
    extension: &'a str,
    display_name: String,
    label: &'a str,
    username: &'a str,
    auth_name: &'a str,
    password: &'a str,
    mailbox: Option<&'a str>,
    shared: bool,
    /// The user's call-waiting default (phone-wide on most phones: line 1's).
    call_waiting: bool,
}

#[derive(Debug, Serialize)]
struct KeyView<'a> {
    index: u16,
    module: Option<u8>,
    #[serde(rename = "type")]
    kind: KeyType,
    code: &'a str,
    value: &'a str,
    label: &'a str,
    line: u16,
    /// Where the key sits counting the phone's keys, then each module's in
    /// chain order, for vendors that number them all in one sequence.
    position: u32,
    /// The key's rank among the device's keys with the same `code`, for
    /// vendors that keep a separate list per kind (e.g. Poly BLF resources).
    ordinal: u32,
}

impl<'a> FileView<'a> {
    /// The view of a common file: the model and settings, no device data.
    /// `firmware` is the version the phone reports, when known.
    pub fn common(
        model: &'a PhoneModel,
        settings: &'a EffectiveSettings,
        firmware: Option<&str>,
    ) -> Self {
        FileView {
            firmware: FirmwareView::new(model, settings, firmware),
            model: ModelView {
                id: &model.id,
                vendor: &model.vendor,
                name: &model.name,
                accounts: model.accounts,
                line_keys: model.line_keys,
                vars: &model.vars,
            },
            tz: TzView::new(settings),
            settings,
            mac: None,
            lines: None,
            keys: None,
            modules: None,
            directory: None,
        }
    }

    /// The view of a device's own file. `users` holds the user of each of
    /// the device's lines, in order; `modules` its checked expansion modules.
    pub fn device(
        model: &'a PhoneModel,
        vendor: &'a Vendor,
        settings: &'a EffectiveSettings,
        device: &'a Device,
        users: &'a [User],
        modules: &[&'a ModuleSpec],
        firmware: Option<&str>,
    ) -> Self {
        let owner = users.first().map(|u| u.id);
        let lines = device
            .lines
            .iter()
            .zip(users)
            .enumerate()
            .map(|(i, (line, user))| LineView {
                index: i + 1,
                extension: &user.extension,
                display_name: user.display_name(),
                label: line.label.as_deref().unwrap_or(&user.extension),
                username: &user.sip.username,
                auth_name: &user.sip.auth_name,
                password: &user.sip.password,
                mailbox: user.voicemail.as_ref().map(|v| v.mailbox.as_str()),
                shared: i > 0 && Some(user.id) != owner,
                call_waiting: user.call_waiting,
            })
            .collect();
        let mut keys: Vec<KeyView<'_>> = device
            .keys
            .iter()
            .map(|key| KeyView {
                index: key.index,
                module: key.module,
                kind: key.kind,
                code: vendor.key_code(key.kind).unwrap_or_default(),
                value: &key.value,
                label: &key.label,
                line: key.line,
                position: key_position(model, modules, key.module, key.index),
                ordinal: 0,
            })
            .collect();
        keys.sort_by_key(|k| (k.module, k.index));
        let mut seen: HashMap<&str, u32> = HashMap::new();
        for key in &mut keys {
            let count = seen.entry(key.code).or_default();
            *count += 1;
            key.ordinal = *count;
        }
        let modules = modules
            .iter()
            .enumerate()
            .map(|(i, m)| ModuleView {
                index: i + 1,
                id: &m.id,
                name: &m.name,
                keys: m.keys,
                pages: m.pages,
            })
            .collect();
        FileView {
            mac: Some(MacView::new(device.mac)),
            lines: Some(lines),
            keys: Some(keys),
            modules: Some(modules),
            ..FileView::common(model, settings, firmware)
        }
    }

    /// Adds the company directory to the view.
    pub fn with_directory(mut self, entries: Vec<DirectoryEntry<'a>>) -> Self {
        self.directory = Some(entries);
        self
    }
}

/// A key's place in one sequence: the phone's own keys, then each module's.
fn key_position(
    model: &PhoneModel,
    modules: &[&ModuleSpec],
    module: Option<u8>,
    index: u16,
) -> u32 {
    let before_module = |m: u8| -> u32 {
        modules
            .iter()
            .take(usize::from(m.saturating_sub(1)))
            .map(|spec| u32::from(spec.keys))
            .sum()
    };
    match module {
        None => u32::from(index),
        Some(m) => u32::from(model.line_keys) + before_module(m) + u32::from(index),
    }
}

impl<'a> TzView<'a> {
    fn new(settings: &'a EffectiveSettings) -> Self {
        let dst = settings.daylight_saving.as_ref();
        let standard = settings.standard_offset.minutes;
        TzView {
            now: OffsetView::new(settings.utc_offset.minutes),
            std: OffsetView::new(standard),
            dst,
            posix: time_zone::posix(standard, dst),
        }
    }
}

impl OffsetView {
    fn new(minutes: i32) -> Self {
        let sign = if minutes < 0 { '-' } else { '+' };
        let (h, m) = (minutes.abs() / 60, minutes.abs() % 60);
        let hours = if m == 0 {
            format!("{sign}{h}")
        } else {
            let fraction = format!("{}", f64::from(m) / 60.0);
            format!("{sign}{h}{}", fraction.trim_start_matches('0'))
        };
        OffsetView {
            minutes,
            seconds: minutes * 60,
            hours,
            gmt: format!("GMT{sign}{h:02}:{m:02}"),
            sign_hhmm: format!("{sign}{h:02}:{m:02}"),
        }
    }
}

impl MacView {
    fn new(mac: Mac) -> Self {
        MacView {
            bare: mac.lower(),
            upper: mac.upper(),
            colon: mac.colon(),
            colon_upper: mac.colon().to_ascii_uppercase(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_render_in_vendor_forms() {
        let tz = OffsetView::new(330);
        assert_eq!((tz.hours.as_str(), tz.gmt.as_str()), ("+5.5", "GMT+05:30"));
        let tz = OffsetView::new(-300);
        assert_eq!((tz.hours.as_str(), tz.sign_hhmm.as_str()), ("-5", "-05:00"));
        assert_eq!(OffsetView::new(0).hours, "+0");
    }

    #[test]
    fn xml_escaping_leaves_urls_readable() {
        let mut out = Vec::new();
        write_xml_escaped("http://a/b?x=1&y=\"<'>\"", &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "http://a/b?x=1&amp;y=&quot;&lt;&apos;&gt;&quot;"
        );
    }

    #[test]
    fn builtin_templates_all_compile() {
        let catalog = Catalog::builtin().unwrap();
        Renderer::load(&catalog, None, Sandbox::this_binary()).unwrap();
    }

    #[test]
    fn output_past_the_cap_is_over_budget() {
        let tera = compile([(
            "loud.txt".to_string(),
            "{% for i in range(end=100000) %}{% for j in range(end=100) %}x{% endfor %}{% endfor %}"
                .to_string(),
        )])
        .unwrap();
        let error = render_with(&tera, "loud.txt", &Context::new()).unwrap_err();
        assert!(
            matches!(
                error,
                RenderError::OverBudget {
                    limit: Limit::Output,
                    ..
                }
            ),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "loud.txt: exceeded the render budget: it wrote more than 1 MiB"
        );
    }
}
