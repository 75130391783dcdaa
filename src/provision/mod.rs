//! The provisioning core: one function that both transports call.
//!
//! A [`Request`] (path, User-Agent, peer) becomes a rendered file or a plain
//! not-found. A phone cannot read error messages, so every refusal looks the
//! same to it; the reason goes to the log instead. What phones do (which
//! device fetched what, which unknown MACs knocked) is buffered in memory
//! and written to the store in batches: a boot storm must not become a storm
//! of disk writes.

pub(crate) mod admission;
pub mod firmware;
pub mod request;

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::access::client_cert::ClientCert;
use crate::access::phone_auth::PhoneAuth;
use crate::access::policy::Policy;
use crate::access::scan::{BanView, ScanGuard, ScanLimits};
use crate::catalog::{Catalog, FileMatch, Identity, ModelFile, PhoneModel};
use crate::domain::clock::{Clock, unix_now};
use crate::domain::mac::Mac;
use crate::domain::records::{
    Device, Discovered, HoldsSecrets, Key, LastGood, Settings, Sighting, User, UserId,
};
use crate::domain::transport::Transport;
use crate::metrics::{Metrics, Outcome};
use crate::provision::firmware::{FirmwareDir, FirmwareImage};
use crate::render::cache::{CacheKey, Input, InputsUsed, RenderCache, Stamp};
use crate::render::pool::RenderPool;
use crate::render::served::ServedFile;
use crate::render::uploaded;
use crate::render::{FileView, RenderError, Renderer, directory};
use crate::store::{GLOBAL_SCOPE, Store, StoreError};
use request::{NotServed, Request};

/// The longest file name a phone may ask for. Real names are under 64
/// characters; anything far longer is a probe.
pub const MAX_PATH_LEN: usize = 255;

/// Rendered files kept for repeat requests: about 16,000 files of 1.5 KB,
/// so a site of 10,000 phones fetching over HTTP and TFTP mostly hits.
const RENDER_CACHE_BYTES: usize = 32 << 20;

/// How many unknown MACs may wait in memory for the next batch write: a
/// scanner walking a vendor's MAC range must not grow memory without bound.
const MAX_PENDING_DISCOVERED: usize = 10_000;

/// What a device's file whose render fails is answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnRenderFailure {
    /// The last file the phone was served, when its lines are the same:
    /// a phone keeps working through a bad change.
    LastGood,
    /// The error (an administrator's preview).
    Error,
}

/// What a request gets once understood: a file from the cache, or a
/// render to do.
enum Answer {
    /// The file, from the cache.
    Ready(ServedFile),
    /// A cache miss, to render here or on a render thread.
    Render(Box<Miss>),
}

/// A cache miss, decided where the request was understood and carried
/// whole to the thread that renders it: nothing is prepared or read twice.
struct Miss {
    key: CacheKey,
    /// The store and templates the decision saw.
    stamp: Stamp,
    /// The model the file is rendered for, and the file's name in it.
    model: String,
    file: String,
    requester: Requester,
    /// For a phone's own file: its device, as read when the miss was decided.
    device: Option<DeviceMiss>,
}

/// What a miss of a phone's own file carries.
struct DeviceMiss {
    device: Device,
    /// The name the phone asked for.
    file_name: String,
    /// The sighting to record once the file is served.
    seen: Sighting,
}

/// A request checked and understood, ready to be answered.
struct Prepared<'r> {
    file_name: &'r str,
    found: FileMatch<'r>,
    identity: Identity,
    requester: Requester,
    key: CacheKey,
}

/// A prepared request and what the render cache holds for it.
struct LookedUp<'r> {
    prepared: Prepared<'r>,
    /// The render stamp the cache was asked at.
    stamp: Stamp,
    cached: Option<ServedFile>,
}

/// What the request says about the phone beyond its file name.
#[derive(Debug, Default)]
pub struct Requester {
    /// `http://<Host>`, the provisioning URL when none is configured.
    pub origin: Option<String>,
    /// The firmware its User-Agent reports.
    pub firmware: Option<String>,
    /// Leave SIP and admin passwords out (clear-text TFTP, by policy).
    pub without_secrets: bool,
    /// Show every password as [`crate::domain::records::SECRET_MASK`], in common
    /// files too (see [`Requester::masked_preview`]).
    pub masked: bool,
}

impl Requester {
    /// An administrator's preview for a token that may not see secrets:
    /// every password shows as the mask, and the file, being without
    /// secrets, is never kept as a phone's last good one nor replaced by it.
    pub fn masked_preview() -> Requester {
        Requester {
            without_secrets: true,
            masked: true,
            ..Requester::default()
        }
    }
}

/// Answers phones' requests; shared by every transport.
pub struct Provisioner {
    store: Arc<Store>,
    catalog: Arc<Catalog>,
    renderer: ArcSwap<Renderer>,
    cache: RenderCache,
    pending_sightings: Mutex<HashMap<Mac, Sighting>>,
    pending_discovered: Mutex<HashMap<Mac, Discovered>>,
    pending_last_good: Mutex<HashMap<(Mac, String), LastGood>>,
    /// A fingerprint of each last good file written, pending or found
    /// unchanged in the store, so a file rendered again unchanged (after a
    /// cache eviction or a restart) is not copied and written again.
    last_good_kept: Mutex<KeptFiles>,
    firmware: FirmwareDir,
    policy: Policy,
    phone_auth: PhoneAuth,
    /// Anti-scanning, per transport: what forged UDP sources do must not
    /// ban anyone over HTTP.
    scan_http: ScanGuard,
    scan_tftp: ScanGuard,
    metrics: Metrics,
    /// The threads renders run on, off the async workers.
    renders: RenderPool,
}

impl Provisioner {
    /// A provisioner over a store, a catalog and its templates, on `clock`'s time.
    // Each argument is a part the server builds and may share; a struct
    // of them would only repeat this list.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<Store>,
        catalog: Arc<Catalog>,
        renderer: Renderer,
        firmware: FirmwareDir,
        policy: Policy,
        phone_auth: PhoneAuth,
        renders: RenderPool,
        clock: Clock,
    ) -> Self {
        let limits = ScanLimits {
            unknown_macs: policy.scan_unknown_macs,
            window: Duration::from_secs(policy.scan_window_secs),
            ban: Duration::from_secs(policy.ban_secs),
        };
        Provisioner {
            firmware,
            phone_auth,
            scan_http: ScanGuard::new(Transport::Http, limits, clock.clone()),
            scan_tftp: ScanGuard::new(Transport::Tftp, limits, clock.clone()),
            policy,
            metrics: Metrics::new(catalog.models().iter().map(|m| m.vendor.as_str())),
            store,
            catalog,
            renderer: ArcSwap::from_pointee(renderer),
            cache: RenderCache::new(RENDER_CACHE_BYTES, clock),
            pending_sightings: Mutex::new(HashMap::new()),
            pending_discovered: Mutex::new(HashMap::new()),
            pending_last_good: Mutex::new(HashMap::new()),
            last_good_kept: Mutex::new(KeptFiles::default()),
            renders,
        }
    }

    /// The access policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// HTTP authentication of phones.
    pub fn phone_auth(&self) -> &PhoneAuth {
        &self.phone_auth
    }

    /// The MAC a path's per-device file is for; None for common files and
    /// anything that is no phone's file.
    pub fn device_file_mac(&self, path: &str) -> Option<Mac> {
        file_name(path).ok()?;
        self.catalog.match_path(path)?.1.mac
    }

    /// The anti-scanning guard of a transport.
    pub fn scan_guard(&self, transport: Transport) -> &ScanGuard {
        match transport {
            Transport::Http => &self.scan_http,
            Transport::Tftp => &self.scan_tftp,
        }
    }

    /// Every transport's bans in force.
    pub fn bans(&self) -> Vec<BanView> {
        let mut bans = self.scan_http.bans();
        bans.extend(self.scan_tftp.bans());
        bans
    }

    /// Lifts every ban covering `address`, on every transport; says how
    /// many there were.
    pub fn lift_bans(&self, address: IpAddr) -> usize {
        self.scan_http.lift(address) + self.scan_tftp.lift(address)
    }

    /// The counters behind `/metrics`.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The catalog the provisioner matches requests against.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The templates in force.
    pub fn renderer(&self) -> Arc<Renderer> {
        self.renderer.load_full()
    }

    /// The state a file rendered now is rendered from: the same request
    /// rendered under the same stamp gives the same file.
    pub fn render_stamp(&self) -> Stamp {
        (
            self.store.generation(),
            self.cache.template_generation(),
            self.cache.quarter_hour(),
        )
    }

    /// Puts a new set of templates in force (after an upload was checked).
    pub fn set_renderer(&self, renderer: Renderer) {
        self.renderer.store(Arc::new(renderer));
        self.cache.templates_changed();
    }

    /// The firmware image a request names: `/firmware/<name>`, or a bare
    /// name that is not a provisioning file. Images are served as they are.
    pub fn firmware(&self, request: &Request<'_>) -> Option<FirmwareImage> {
        if !self.policy.allows(request.transport, request.peer) {
            return None;
        }
        let bare = request.path.trim_start_matches('/');
        let bare_names = !bare.contains('/') && self.catalog.match_file(bare).is_none();
        self.firmware.find(request.path, bare_names)
    }

    /// Answers one request on the calling thread, render included (the
    /// benchmarks measure it so); the transports use
    /// [`Provisioner::handle_async`].
    pub fn handle(&self, request: &Request<'_>) -> Result<ServedFile, NotServed> {
        let result = self.answer(request).and_then(|answer| match answer {
            Answer::Ready(file) => Ok(file),
            Answer::Render(miss) => self.render_miss(*miss),
        });
        self.count(request, result)
    }

    /// Answers one request from an async task: cache hits, refusals and
    /// unknown files are answered at once; a render, which costs a hundred
    /// microseconds or more, runs on the render pool so a boot storm's
    /// first requests do not hold up the async workers.
    pub async fn handle_async(
        self: &Arc<Self>,
        request: &Request<'_>,
    ) -> Result<ServedFile, NotServed> {
        let looked_up = match self.prepare(request) {
            Ok(prepared) => self.look_up(prepared),
            Err(refused) => return self.count(request, Err(refused)),
        };
        if looked_up.cached.is_none()
            && let Some(mac) = looked_up.prepared.found.mac
        {
            // The render reads the last sighting only for the firmware the
            // request did not say (TFTP has no User-Agent).
            let sighting = looked_up.prepared.requester.firmware.is_none();
            self.store.read_ahead(mac, sighting).await;
        }
        let miss = match self.respond(request, looked_up) {
            Ok(Answer::Render(miss)) => miss,
            Ok(Answer::Ready(file)) => return self.count(request, Ok(file)),
            Err(refused) => return self.count(request, Err(refused)),
        };
        let provisioner = Arc::clone(self);
        let rendered = self
            .renders
            .run(move || provisioner.render_miss(*miss))
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "a render task failed");
                Err(NotServed::Render(RenderError::Other(e.to_string())))
            });
        self.count(request, rendered)
    }

    /// Counts an answer in the metrics.
    fn count(
        &self,
        request: &Request<'_>,
        result: Result<ServedFile, NotServed>,
    ) -> Result<ServedFile, NotServed> {
        if let Ok(file) = &result
            && let Some(model) = self.catalog.model(&file.model)
        {
            self.metrics.served(request.transport, &model.vendor);
        }
        let outcome = match &result {
            Ok(_) => Outcome::Served,
            Err(reason) if reason.is_refusal() => Outcome::Refused,
            Err(reason) if reason.is_busy() => Outcome::Busy,
            Err(_) => Outcome::NotFound,
        };
        self.metrics.request(request.transport, outcome);
        result
    }

    /// What a request gets: a cached file, a render to do, or a refusal.
    fn answer(&self, request: &Request<'_>) -> Result<Answer, NotServed> {
        let prepared = self.prepare(request)?;
        self.respond(request, self.look_up(prepared))
    }

    /// Everything about a request short of rendering: the policy's checks,
    /// the file it means, who asks, and the cache key.
    fn prepare<'r>(&'r self, request: &'r Request<'_>) -> Result<Prepared<'r>, NotServed> {
        if !self.policy.allows(request.transport, request.peer) {
            return Err(NotServed::NotAllowed);
        }
        file_name(request.path)?;
        let (file_name, found) = self
            .catalog
            .match_path(request.path)
            .ok_or(NotServed::UnknownFile)?;
        let identity = request
            .user_agent
            .map(|ua| self.catalog.identify_user_agent(ua))
            .unwrap_or_default();
        let requester = Requester {
            origin: request.origin(),
            firmware: identity.firmware.clone(),
            without_secrets: !self.policy.secrets_for(request.transport, request.peer),
            masked: false,
        };
        if let Some(mac) = found.mac {
            self.check_client(mac, request, &identity)?;
        }
        let key = CacheKey {
            file: file_name.to_ascii_lowercase(),
            // The device's record names its model: a User-Agent's word
            // changes nothing there.
            model: match found.mac {
                Some(_) => None,
                None => common_model(&found, identity.model.as_deref()).map(|(m, _)| m.id.clone()),
            },
            origin: Input::Given(requester.origin.clone()),
            firmware: Input::Given(requester.firmware.clone()),
            without_secrets: requester.without_secrets,
        };
        Ok(Prepared {
            file_name,
            found,
            identity,
            requester,
            key,
        })
    }

    /// The request's file in the render cache, if it is there. The stamp
    /// is read before the device: a change made meanwhile makes the
    /// render's cache entry stale, never a stale file current.
    fn look_up<'r>(&self, prepared: Prepared<'r>) -> LookedUp<'r> {
        let stamp = self.render_stamp();
        let cached = self.cache.get(&prepared.key, stamp);
        self.metrics.cache(cached.is_some());
        LookedUp {
            prepared,
            stamp,
            cached,
        }
    }

    /// The cached file, or the render a miss needs.
    fn respond(&self, request: &Request<'_>, looked_up: LookedUp<'_>) -> Result<Answer, NotServed> {
        let LookedUp {
            prepared:
                Prepared {
                    file_name,
                    found,
                    identity,
                    requester,
                    key,
                },
            stamp,
            cached,
        } = looked_up;
        let seen = || Sighting {
            origin: requester.origin.clone(),
            without_secrets: requester.without_secrets,
            ..sighting(file_name, request, &identity)
        };
        let Some(mac) = found.mac else {
            if let Some(file) = cached {
                return Ok(Answer::Ready(file));
            }
            let (model, file) =
                common_model(&found, identity.model.as_deref()).ok_or(NotServed::UnknownFile)?;
            return Ok(Answer::Render(Box::new(Miss {
                key,
                stamp,
                model: model.id.clone(),
                file: file.name.clone(),
                requester,
                device: None,
            })));
        };
        if let Some(file) = cached {
            self.note_served(mac, seen(), &file);
            return Ok(Answer::Ready(file));
        }
        let Some(device) = self.store.device(mac)? else {
            self.metrics.unknown_mac();
            self.scan_guard(request.transport)
                .note_unknown(request.peer, mac);
            self.note_discovered(mac, file_name, request, &identity);
            return Err(NotServed::UnknownMac(mac));
        };
        let (model, file) = self.device_file(&found, &device)?;
        let seen = seen();
        Ok(Answer::Render(Box::new(Miss {
            key,
            stamp,
            model: model.id.clone(),
            file: file.name.clone(),
            requester,
            device: Some(DeviceMiss {
                device,
                file_name: file_name.to_string(),
                seen,
            }),
        })))
    }

    /// Renders a miss, keeps it in the cache and, for a phone's own file,
    /// notes that the phone got it.
    fn render_miss(&self, miss: Miss) -> Result<ServedFile, NotServed> {
        let model = self
            .catalog
            .model(&miss.model)
            .ok_or(NotServed::UnknownFile)?;
        let file = model
            .files
            .iter()
            .find(|f| f.name == miss.file)
            .ok_or(NotServed::UnknownFile)?;
        let (served, used) = match &miss.device {
            None => self.serve_common(model, file, &miss.requester)?,
            Some(asked) => self.serve_device(
                &asked.device,
                model,
                file,
                &asked.file_name,
                &miss.requester,
                OnRenderFailure::LastGood,
            )?,
        };
        let served = self.keep(miss.key, miss.stamp, served, used);
        if let Some(asked) = miss.device {
            self.note_served(asked.device.mac, asked.seen, &served);
        }
        Ok(served)
    }

    /// Notes that a phone got `file`, for the next batch of sightings.
    fn note_served(&self, mac: Mac, seen: Sighting, file: &ServedFile) {
        let seen = Sighting {
            etag: Some(file.etag.clone()),
            ..seen
        };
        lock(&self.pending_sightings).insert(mac, seen);
    }

    /// The model and file a device's record says a matched file is: the
    /// device's model must be among the candidates.
    fn device_file<'f>(
        &self,
        found: &FileMatch<'f>,
        device: &Device,
    ) -> Result<(&'f PhoneModel, &'f ModelFile), NotServed> {
        let candidate = found.candidates.iter().find(|(m, _)| m.id == device.model);
        candidate.copied().ok_or_else(|| {
            let (mac, model) = (device.mac, device.model.clone());
            match self.catalog.model(&model) {
                Some(_) => NotServed::WrongModel { mac, model },
                None => NotServed::MissingModel { mac, model },
            }
        })
    }

    /// Refuses a per-device file to a client the policy keeps out: one whose
    /// client certificate does not name the file's MAC (or that has none
    /// where one is required), one whose User-Agent names another MAC, or
    /// one banned for scanning (see `Provisioner::is_banned_from`).
    fn check_client(
        &self,
        mac: Mac,
        request: &Request<'_>,
        identity: &Identity,
    ) -> Result<(), NotServed> {
        // First: a certificate is stronger evidence than a User-Agent, so a
        // matching User-Agent must not get past it.
        if !request.client_cert.vouches_for(mac) {
            return Err(NotServed::ClientCert(request.client_cert));
        }
        // Where HTTPS requires certificates, plain HTTP must not hand out
        // what HTTPS guards.
        let plain_http = request.transport == Transport::Http && !request.https;
        if plain_http && self.policy.client_certs_required && !request.authenticated {
            return Err(NotServed::ClientCert(ClientCert::Missing));
        }
        match identity.mac {
            Some(own) if own != mac && self.policy.match_user_agent_mac => {
                Err(NotServed::OtherMac(own))
            }
            _ if self.is_banned_from(request, mac) => Err(NotServed::Banned),
            _ => Ok(()),
        }
    }

    /// What a name the administrator gives means: it must be one of the
    /// catalog's file patterns as a whole (`gs-phonebook/{mac}/phonebook.xml`
    /// has folders), not a path that ends in one.
    fn file_pattern(&self, name: &str) -> Result<FileMatch<'_>, NotServed> {
        file_name(name)?;
        match self.catalog.match_path(name) {
            Some((pattern, found)) if pattern == name => Ok(found),
            Some(_) => Err(NotServed::BadPath("a file name, not a path")),
            None => Err(NotServed::UnknownFile),
        }
    }

    /// Renders a device's file the way a phone asking as `requester` would
    /// get it, without counting it as a request (for administrators'
    /// previews, and to tell whether a phone has its current file).
    pub fn preview(
        &self,
        mac: Mac,
        file_name: &str,
        requester: &Requester,
    ) -> Result<ServedFile, NotServed> {
        let found = self.file_pattern(file_name)?;
        let device = self.store.device(mac)?.ok_or(NotServed::UnknownMac(mac))?;
        match found.mac {
            // An administrator is shown what fails, not what hides it.
            Some(file_mac) if file_mac == mac => {
                let (model, file) = self.device_file(&found, &device)?;
                self.serve_device(
                    &device,
                    model,
                    file,
                    file_name,
                    requester,
                    OnRenderFailure::Error,
                )
                .map(|(file, _)| file)
            }
            Some(_) => Err(NotServed::BadPath("the file names another MAC")),
            None => {
                let (model, file) = found
                    .candidates
                    .iter()
                    .find(|(m, _)| m.id == device.model)
                    .copied()
                    .ok_or(NotServed::WrongModel {
                        mac,
                        model: device.model,
                    })?;
                self.serve_common(model, file, requester)
                    .map(|(file, _)| file)
            }
        }
    }

    /// Keeps a rendered file in the cache, under a key that ignores what
    /// the render did not use; gives the file back.
    fn keep(&self, key: CacheKey, stamp: Stamp, file: ServedFile, used: InputsUsed) -> ServedFile {
        self.cache.put(key.keeping(used), stamp, &file);
        file
    }

    /// Which request inputs a file of `model` (for `device`) depends on,
    /// from the settings its render reads.
    fn inputs_used(
        &self,
        model: &PhoneModel,
        device: Option<&Device>,
    ) -> Result<InputsUsed, NotServed> {
        let global = self.store.settings(GLOBAL_SCOPE)?;
        let of_model = self.store.settings(&model_scope(&model.id))?;
        let no_settings = Settings::default();
        let of_device = device.map_or(&no_settings, |d| &d.settings);
        let settings = Settings::effective(&[&global, &of_model, of_device]);
        Ok(InputsUsed {
            origin: settings.provisioning_url.is_none(),
            firmware: settings.firmware_url.is_some(),
        })
    }

    fn serve_common(
        &self,
        model: &PhoneModel,
        file: &ModelFile,
        requester: &Requester,
    ) -> Result<(ServedFile, InputsUsed), NotServed> {
        let used = self.inputs_used(model, None)?;
        let started = Instant::now();
        let body = self.render_common(&self.renderer(), model, file, requester)?;
        self.metrics.render(started.elapsed());
        Ok((ServedFile::new(body, model, file, None), used))
    }

    /// Renders a common file of a model with the given templates.
    pub fn render_common(
        &self,
        renderer: &Renderer,
        model: &PhoneModel,
        file: &ModelFile,
        requester: &Requester,
    ) -> Result<Vec<u8>, NotServed> {
        let mut settings = Settings::effective(&[
            &self.store.settings(GLOBAL_SCOPE)?,
            &self.store.settings(&model_scope(&model.id))?,
        ]);
        settings.provisioning_url = settings.provisioning_url.or(requester.origin.clone());
        // Anyone may fetch a common file, no MAC needed; the phone's admin
        // password (its web page exports the SIP password) goes only in
        // per-device files, which every family's phones also read.
        settings.admin_password = None;
        if requester.masked {
            settings.mask_secrets();
        }
        let view = FileView::common(model, &settings, requester.firmware.as_deref());
        let template = renderer.pick(
            &[&uploaded::model_key(&model.id, &file.name)],
            &file.template,
        );
        Ok(renderer.render(&template, &view)?)
    }

    /// Renders a device's file, falling back on its last good render when
    /// `on_failure` says so.
    fn serve_device(
        &self,
        device: &Device,
        model: &PhoneModel,
        file: &ModelFile,
        file_name: &str,
        requester: &Requester,
        on_failure: OnRenderFailure,
    ) -> Result<(ServedFile, InputsUsed), NotServed> {
        let mac = device.mac;
        tracing::trace!(%mac, file = file_name, "rendering");
        let used = self.inputs_used(model, Some(device))?;
        let users = self.device_users(device)?;
        let started = Instant::now();
        let rendered = self.render_device(&self.renderer(), model, file, device, &users, requester);
        self.metrics.render(started.elapsed());
        let key = (mac, file_name.to_ascii_lowercase());
        let accounts: Vec<UserId> = device.lines.iter().map(|line| line.user).collect();
        match rendered {
            Ok(body) => {
                if !requester.without_secrets {
                    self.keep_last_good(key, accounts, &body);
                }
                Ok((ServedFile::new(body, model, file, Some(mac)), used))
            }
            Err(failure @ (NotServed::Render(_) | NotServed::Invalid(_))) => {
                self.metrics.render_failure();
                let pending = lock(&self.pending_last_good).get(&key).cloned();
                let good = match pending {
                    Some(good) => Some(good),
                    None => self.store.last_good(mac, &key.1)?,
                };
                match good {
                    Some(good)
                        if on_failure == OnRenderFailure::LastGood
                            && good.users == accounts
                            && !requester.without_secrets =>
                    {
                        tracing::error!(%mac, file = file_name, error = %failure, "render failed: serving the last good file");
                        let file = ServedFile::new(good.body.into_bytes(), model, file, Some(mac));
                        // Kept for this very request only.
                        let all = InputsUsed {
                            origin: true,
                            firmware: true,
                        };
                        Ok((file, all))
                    }
                    _ => {
                        tracing::error!(%mac, file = file_name, error = %failure, "render failed and there is no good file to fall back on");
                        Err(failure)
                    }
                }
            }
            Err(other) => Err(other),
        }
    }

    /// The users of a device's lines, in line order.
    pub fn device_users(&self, device: &Device) -> Result<Vec<User>, NotServed> {
        device
            .lines
            .iter()
            .map(|line| self.store.user(line.user))
            .collect::<Result<Option<Vec<User>>, _>>()?
            .ok_or(NotServed::Store(StoreError::NotFound(
                "a user on this device's lines".into(),
            )))
    }

    /// The device as its files show it: its layout's keys under its own,
    /// and `{name}` and `{extension}` in key labels filled in from the user
    /// each key targets (its value, when no user has that extension).
    pub fn laid_out<'d>(&self, device: &'d Device) -> Result<Cow<'d, Device>, NotServed> {
        let mut shown = match &device.layout {
            None if !device.keys.iter().any(has_label_variable) => {
                return Ok(Cow::Borrowed(device));
            }
            None => device.clone(),
            Some(name) => self
                .store
                .layout(name)?
                .ok_or_else(|| NotServed::Invalid(format!("layout {name} does not exist")))?
                .laid_under(device),
        };
        shown.keys = std::mem::take(&mut shown.keys)
            .into_iter()
            .map(|key| self.labelled(key))
            .collect::<Result<_, _>>()?;
        Ok(Cow::Owned(shown))
    }

    /// A key with its label's variables filled in.
    fn labelled(&self, mut key: Key) -> Result<Key, NotServed> {
        if has_label_variable(&key) {
            let name = match self.store.user_by_extension(&key.value)? {
                Some(user) => user.display_name(),
                None => key.value.clone(),
            };
            key.label = key
                .label
                .replace("{name}", &name)
                .replace("{extension}", &key.value);
        }
        Ok(key)
    }

    /// Renders a device's file with the given templates; `users` are the
    /// users of its lines, in order.
    pub fn render_device(
        &self,
        renderer: &Renderer,
        model: &PhoneModel,
        file: &ModelFile,
        device: &Device,
        users: &[User],
        requester: &Requester,
    ) -> Result<Vec<u8>, NotServed> {
        let device = self.laid_out(device)?;
        let device = device.as_ref();
        // Line 1's user picks the language, unless the phone itself names one.
        let owner = Settings {
            language: users.first().and_then(|user| user.language.clone()),
            ..Settings::default()
        };
        let mut settings = Settings::effective(&[
            &self.store.settings(GLOBAL_SCOPE)?,
            &self.store.settings(&model_scope(&model.id))?,
            &owner,
            &device.settings,
        ]);
        settings.provisioning_url = settings.provisioning_url.or(requester.origin.clone());
        let stripped: Vec<User>;
        let users = if requester.masked {
            settings.mask_secrets();
            stripped = users.iter().cloned().map(HoldsSecrets::masked).collect();
            &stripped
        } else if requester.without_secrets {
            settings.admin_password = None;
            stripped = users.iter().cloned().map(User::without_password).collect();
            &stripped
        } else {
            users
        };
        let vendor = self.catalog.vendor_of(model);
        let modules = model
            .device_modules(device)
            .map_err(|e| NotServed::Invalid(e.to_string()))?;
        // Over TFTP there is no User-Agent: the last one seen tells the firmware.
        let firmware = match &requester.firmware {
            Some(reported) => Some(reported.clone()),
            None => self.store.sighting(device.mac)?.and_then(|s| s.firmware),
        };
        let view = FileView::device(
            model,
            vendor,
            &settings,
            device,
            users,
            &modules,
            firmware.as_deref(),
        );
        let template = renderer.pick(
            &[
                &uploaded::device_key(device.mac, &file.name),
                &uploaded::model_key(&model.id, &file.name),
            ],
            &file.template,
        );
        let everyone;
        let view = if renderer.uses_directory(&template) {
            everyone = self.store.users()?;
            view.with_directory(directory(&everyone))
        } else {
            view
        };
        Ok(renderer.render(&template, &view)?)
    }

    fn note_discovered(&self, mac: Mac, file: &str, request: &Request<'_>, identity: &Identity) {
        let last = sighting(file, request, identity);
        let path_identity = self.catalog.identify_path(file);
        let vendor = identity
            .vendor
            .clone()
            .or(path_identity.vendor)
            .or_else(|| self.catalog.vendor_by_oui(mac).map(|v| v.name.clone()));
        let model = identity.model.clone().or(path_identity.model);
        let reported_model = identity.reported_model.clone();
        let mut pending = lock(&self.pending_discovered);
        if let Some(entry) = pending.get_mut(&mac) {
            entry.count += 1;
            entry.vendor = vendor.or(entry.vendor.take());
            entry.model = model.or(entry.model.take());
            entry.reported_model = reported_model.or(entry.reported_model.take());
            entry.last = last;
        } else if pending.len() < MAX_PENDING_DISCOVERED {
            pending.insert(
                mac,
                Discovered {
                    mac,
                    first_seen: last.at,
                    count: 1,
                    vendor,
                    model,
                    reported_model,
                    last,
                },
            );
        }
    }

    /// Drops the rendered files nobody asked for since the previous sweep,
    /// when one is due ([`crate::cache::SWEEP_INTERVAL`]), so memory a boot
    /// storm took comes back once it is over: when it dropped any, or an
    /// administrator's bulk work ended meanwhile, every thread is asked to
    /// give its free memory back.
    pub fn sweep_render_cache(&self) {
        let Some(dropped) = self.cache.sweep_if_due() else {
            return;
        };
        if crate::render::memory::take_bulk_work() || dropped > 0 {
            crate::render::memory::ask_release();
        }
    }

    /// The bytes the render cache holds.
    pub fn render_cache_bytes(&self) -> usize {
        self.cache.bytes()
    }

    /// Forgets discovered MACs past [`DISCOVERED_TTL`] and beyond [`MAX_DISCOVERED`].
    pub fn prune_discovered(&self) -> Result<usize, StoreError> {
        let cutoff = unix_now().saturating_sub(DISCOVERED_TTL.as_secs());
        self.store.prune_discovered(cutoff, MAX_DISCOVERED)
    }

    /// Queues a device's freshly rendered file as its last good one, unless
    /// the same file for the same accounts is already kept.
    fn keep_last_good(&self, key: (Mac, String), users: Vec<UserId>, body: &[u8]) {
        let mut hasher = std::hash::DefaultHasher::new();
        (&users, body).hash(&mut hasher);
        let fingerprint = hasher.finish();
        // Bound first, so the lock is not held while the store is read.
        let kept =
            lock(&self.last_good_kept).insert(self.store.generation(), key.clone(), fingerprint);
        match kept {
            Some(kept) if kept == fingerprint => return,
            Some(_) => {}
            // First render since the server started: the first storm after
            // a restart would otherwise write every file again, unchanged
            // (30 MB for 10,000 phones). A failed read only costs that write.
            None => {
                let stored = self.store.last_good(key.0, &key.1).ok().flatten();
                if stored.is_some_and(|good| good.users == users && good.body.as_bytes() == body) {
                    return;
                }
            }
        }
        let good = LastGood {
            users,
            body: String::from_utf8_lossy(body).into_owned(),
        };
        lock(&self.pending_last_good).insert(key, good);
    }

    /// Writes the buffered sightings and discovered MACs to the store.
    pub fn flush_sightings(&self) -> Result<(), StoreError> {
        let sightings: Vec<(Mac, Sighting)> = std::mem::take(&mut *lock(&self.pending_sightings))
            .into_iter()
            .collect();
        let discovered: Vec<Discovered> = std::mem::take(&mut *lock(&self.pending_discovered))
            .into_values()
            .collect();
        if !sightings.is_empty() {
            self.store.record_sightings(&sightings)?;
        }
        if !discovered.is_empty() {
            self.store.record_discovered(&discovered)?;
        }
        let last_good: Vec<((Mac, String), LastGood)> =
            std::mem::take(&mut *lock(&self.pending_last_good))
                .into_iter()
                .collect();
        if !last_good.is_empty() {
            self.store.record_last_good(&last_good)?;
        }
        Ok(())
    }
}

/// Fingerprints of the last good files known to be in the store, as of one
/// store generation: any change may have deleted some (with their device),
/// so a new generation starts again from the store.
#[derive(Debug, Default)]
struct KeptFiles {
    generation: u64,
    fingerprints: HashMap<(Mac, String), u64>,
}

impl KeptFiles {
    /// Records a file's fingerprint; returns the one known before, if any.
    fn insert(&mut self, generation: u64, key: (Mac, String), fingerprint: u64) -> Option<u64> {
        if generation != self.generation {
            self.fingerprints.clear();
            self.generation = generation;
        }
        self.fingerprints.insert(key, fingerprint)
    }
}

/// How often buffered sightings are written to the store.
pub const SIGHTING_FLUSH_INTERVAL: Duration = Duration::from_secs(2);

/// How long an unknown MAC stays listed after its last request.
pub const DISCOVERED_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// The most unknown MACs kept: the newest win, so a scanner walking a MAC
/// range cannot fill the disk.
pub const MAX_DISCOVERED: usize = 10_000;

/// The settings scope of a model.
pub fn model_scope(model_id: &str) -> String {
    format!("model:{model_id}")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn sighting(file: &str, request: &Request<'_>, identity: &Identity) -> Sighting {
    Sighting {
        at: unix_now(),
        ip: request.peer,
        user_agent: request.user_agent.map(|ua| ua.chars().take(256).collect()),
        firmware: identity.firmware.clone(),
        file: file.to_string(),
        transport: request.transport.name().to_string(),
        etag: None,
        origin: None,
        without_secrets: false,
    }
}

/// Whether a key's label names a variable to fill in.
fn has_label_variable(key: &Key) -> bool {
    key.label.contains("{name}") || key.label.contains("{extension}")
}

/// The model a common file is rendered for: several models may share a
/// common file name, and the one the User-Agent names is preferred.
fn common_model<'f>(
    found: &FileMatch<'f>,
    model_hint: Option<&str>,
) -> Option<(&'f PhoneModel, &'f ModelFile)> {
    found
        .candidates
        .iter()
        .find(|(m, _)| model_hint == Some(m.id.as_str()))
        .or(found.candidates.first())
        .copied()
}

/// The file name a request path asks for (its last part), after refusing
/// anything hostile: over-long names, control characters, `.` and `..`
/// segments anywhere in the path.
pub fn file_name(path: &str) -> Result<&str, NotServed> {
    if path.len() > MAX_PATH_LEN {
        return Err(NotServed::BadPath("path too long"));
    }
    if path.chars().any(char::is_control) {
        return Err(NotServed::BadPath("control character in path"));
    }
    let mut segments = path.split(['/', '\\']).filter(|s| !s.is_empty()).peekable();
    let mut last = None;
    while let Some(segment) = segments.next() {
        if segment == ".." || segment == "." {
            return Err(NotServed::BadPath("relative path segment"));
        }
        if segments.peek().is_none() {
            last = Some(segment);
        }
    }
    last.ok_or(NotServed::BadPath("no file name"))
}

/// The log line of a firmware transfer, with the same fields as the others.
pub fn log_firmware(request: &Request<'_>, image: &FirmwareImage, bytes: u64, elapsed: Duration) {
    let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    tracing::info!(
        transport = request.transport.name(),
        peer = %request.peer,
        file = %image.name.escape_debug(),
        status = "firmware",
        bytes,
        micros,
        "provision"
    );
}

/// One log line per provisioning request; the same fields for every transport.
pub fn log_request(
    request: &Request<'_>,
    result: &Result<ServedFile, NotServed>,
    bytes: usize,
    elapsed: Duration,
) {
    let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    let path: String = request.path.chars().take(80).collect();
    match result {
        Ok(file) => tracing::info!(
            transport = request.transport.name(),
            peer = %request.peer,
            file = %path.escape_debug(),
            mac = %file.mac.map(|m| m.to_string()).unwrap_or_default(),
            model = %file.model,
            status = "served",
            bytes,
            micros,
            "provision"
        ),
        Err(reason) => tracing::info!(
            transport = request.transport.name(),
            peer = %request.peer,
            file = %path.escape_debug(),
            mac = %reason.mac().map(|m| m.to_string()).unwrap_or_default(),
            status = "not-found",
            reason = %reason,
            micros,
            "provision"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Hostile or random paths never panic, and what passes is one plain
        /// name: no separator, no dot segment, no control character.
        #[test]
        fn any_path_is_refused_or_reduced_to_a_plain_name(path in "\\PC{0,40}|[./\\\\%a-f0-9]{0,40}") {
            if let Ok(name) = file_name(&path) {
                prop_assert!(!name.is_empty());
                prop_assert!(!name.contains(['/', '\\']));
                prop_assert!(name != "." && name != "..");
                prop_assert!(!name.chars().any(char::is_control));
            }
        }
    }

    #[test]
    fn hostile_paths_are_refused() {
        for path in [
            "../../etc/passwd",
            "/cfg/../001565aabbcc.cfg",
            "..\\..\\windows\\win.ini",
            "001565aabbcc.cfg\0",
            "a\nb.cfg",
            "/",
            "",
            "./001565aabbcc.cfg",
        ] {
            assert!(file_name(path).is_err(), "{path:?} should be refused");
        }
        assert!(file_name(&"a".repeat(300)).is_err());
    }

    #[test]
    fn the_file_name_is_the_last_segment() {
        assert_eq!(file_name("/001565aabbcc.cfg").unwrap(), "001565aabbcc.cfg");
        assert_eq!(file_name("prov/Cisco/x.xml").unwrap(), "x.xml");
        assert_eq!(file_name("C:\\tftp\\x.cfg").unwrap(), "x.cfg");
    }
}
