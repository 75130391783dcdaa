//! The key editor's power tools, each working on the draft the editor
//! posted: sort by label, fill a range of extensions or numbers, copy the
//! keys of another phone, a user's phone or a named layout, add or remove
//! an expansion module. A preview says what lands where and what does not
//! fit; nothing is stored until the editor's Save.

use std::collections::HashSet;

use crate::catalog::PhoneModel;
use crate::domain::records::{Device, Invalid, Key, KeyType};

use super::keys::position_name;

/// The most numbers one fill takes: more than any phone with its modules
/// has keys, and few enough that a typo cannot make a huge page.
const MAX_FILL: u64 = 1_000;

/// What a tool would do: where keys land and what does not fit.
pub(crate) struct Preview {
    /// What was previewed or applied ("Fill 201 to 205 as blf").
    pub title: String,
    /// "Key 3: blf 201", one a key that lands.
    pub lands: Vec<String>,
    /// What finds no place, and why.
    pub misfits: Vec<String>,
}

/// Every position of `device`'s faceplate in page order: the phone's keys,
/// then each module's.
pub(super) fn positions(
    model: &PhoneModel,
    device: &Device,
) -> Result<Vec<(Option<u8>, u16)>, Invalid> {
    let modules = model.device_modules(device)?;
    let mut all: Vec<(Option<u8>, u16)> = (1..=model.line_keys).map(|i| (None, i)).collect();
    for (n, spec) in (1u8..).zip(&modules) {
        all.extend((1..=spec.keys).map(|i| (Some(n), i)));
    }
    Ok(all)
}

/// Puts each group's keys in order of `label_of` (empty labels last) on
/// the positions that group's keys already take.
pub(super) fn sort_by_label(device: &mut Device, label_of: impl Fn(&Key) -> String) {
    let groups: HashSet<Option<u8>> = device.keys.iter().map(|k| k.module).collect();
    for group in groups {
        let (mut mine, others): (Vec<Key>, Vec<Key>) = std::mem::take(&mut device.keys)
            .into_iter()
            .partition(|k| k.module == group);
        let mut places: Vec<u16> = mine.iter().map(|k| k.index).collect();
        places.sort_unstable();
        mine.sort_by_cached_key(|k| {
            let label = label_of(k).to_lowercase();
            (label.is_empty(), label)
        });
        for (key, index) in mine.iter_mut().zip(places) {
            key.index = index;
        }
        device.keys = others;
        device.keys.extend(mine);
    }
    device.keys.sort_by_key(|k| (k.module, k.index));
}

/// A range of extensions or numbers to put on free keys.
pub(super) struct FillRange<'f> {
    /// The first number, as typed (its width keeps leading zeros).
    pub first: &'f str,
    /// The last number.
    pub last: &'f str,
    /// The keys' type.
    pub kind: KeyType,
    /// The position (in page order, from 0) to start at.
    pub start: usize,
}

/// `device` with `range` put on its free positions from `range.start` on,
/// in page order; what does not find a free position is listed.
pub(super) fn fill(
    device: &mut Device,
    model: &PhoneModel,
    range: &FillRange,
) -> Result<Preview, Invalid> {
    let number = |field: &str, text: &str| {
        let text = text.trim();
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Invalid::new(field, "digits only, e.g. 201"));
        }
        text.parse::<u64>()
            .map_err(|_| Invalid::new(field, "too long a number"))
    };
    let (first, last) = (
        number("fill_first", range.first)?,
        number("fill_last", range.last)?,
    );
    if last < first {
        return Err(Invalid::new("fill_last", "comes before the first"));
    }
    if last - first >= MAX_FILL {
        return Err(Invalid::new(
            "fill_last",
            format!("at most {MAX_FILL} numbers at once"),
        ));
    }
    if !model.key_types.contains(&range.kind) || range.kind == KeyType::None {
        return Err(Invalid::new(
            "fill_type",
            format!("the {} has no {} keys", model.name, range.kind.name()),
        ));
    }
    let width = range.first.trim().len();
    let taken: HashSet<(Option<u8>, u16)> =
        device.keys.iter().map(|k| (k.module, k.index)).collect();
    let mut free = positions(model, device)?
        .into_iter()
        .skip(range.start)
        .filter(|p| !taken.contains(p));
    let mut preview = Preview {
        title: format!(
            "Fill {} to {} as {}",
            range.first.trim(),
            range.last.trim(),
            range.kind.name()
        ),
        lands: Vec::new(),
        misfits: Vec::new(),
    };
    for n in first..=last {
        let value = format!("{n:0width$}");
        match free.next() {
            Some((module, index)) => {
                preview.lands.push(format!(
                    "{}: {} {value}",
                    position_name(module, index),
                    range.kind.name()
                ));
                device.keys.push(Key {
                    module,
                    index,
                    kind: range.kind,
                    value,
                    label: String::new(),
                    line: 1,
                });
            }
            None => preview.misfits.push(format!(
                "{value}: no free key from the starting position on"
            )),
        }
    }
    device.keys.sort_by_key(|k| (k.module, k.index));
    Ok(preview)
}

/// `device` with `source`'s keys instead of its own, each at the same
/// place; a key that does not fit this phone (a module it lacks, a
/// position past its last key, a type or line it does not have) is listed
/// with why and left out.
pub(super) fn copy(device: &mut Device, model: &PhoneModel, source: &str, keys: &[Key]) -> Preview {
    let mut preview = Preview {
        title: format!("Copy the keys of {source}"),
        lands: Vec::new(),
        misfits: Vec::new(),
    };
    let mut fitting = Vec::new();
    for key in keys {
        let probe = Device {
            keys: vec![key.clone()],
            ..device.clone()
        };
        let fits = probe.validate().and_then(|()| model.check_device(&probe));
        let what = format!(
            "{}: {} {}",
            position_name(key.module, key.index),
            key.kind.name(),
            key.value
        );
        match fits {
            Ok(()) => {
                preview.lands.push(what);
                fitting.push(key.clone());
            }
            Err(why) => preview.misfits.push(format!("{what}: {}", why.message)),
        }
    }
    device.keys = fitting;
    preview
}

/// Chains a module of kind `id` after the device's others.
pub(super) fn add_module(device: &mut Device, model: &PhoneModel, id: &str) -> Result<(), Invalid> {
    if !model.modules.iter().any(|m| m.id == id) {
        return Err(Invalid::new(
            "module_kind",
            format!("module '{id}' does not fit the {}", model.name),
        ));
    }
    if device.modules.len() >= usize::from(model.max_modules) {
        return Err(Invalid::new(
            "module_kind",
            format!(
                "the {} takes at most {} expansion module(s)",
                model.name, model.max_modules
            ),
        ));
    }
    device.modules.push(id.to_string());
    Ok(())
}

/// Unchains module `n` (from 1) with its keys; the modules after it move
/// up one place, their keys with them.
pub(super) fn remove_module(device: &mut Device, n: u8) {
    if n == 0 || usize::from(n) > device.modules.len() {
        return;
    }
    device.modules.remove(usize::from(n) - 1);
    device.keys.retain(|k| k.module != Some(n));
    for key in &mut device.keys {
        if let Some(m) = key.module.filter(|m| *m > n) {
            key.module = Some(m - 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(module: Option<u8>, index: u16, value: &str, label: &str) -> Key {
        Key {
            module,
            index,
            kind: KeyType::Blf,
            value: value.into(),
            label: label.into(),
            line: 1,
        }
    }

    fn device(keys: Vec<Key>, modules: &[&str]) -> Device {
        Device {
            mac: "001565aabbcc".parse().unwrap(),
            model: "m".into(),
            description: None,
            lines: Vec::new(),
            keys,
            layout: None,
            modules: modules.iter().map(|m| m.to_string()).collect(),
            settings: Default::default(),
        }
    }

    #[test]
    fn sorting_keeps_each_groups_places() {
        let mut d = device(
            vec![
                key(None, 2, "1", "Zoe"),
                key(None, 5, "2", ""),
                key(None, 7, "3", "adam"),
                key(Some(1), 1, "4", "b"),
            ],
            &["x"],
        );
        sort_by_label(&mut d, |k| k.label.clone());
        let placed: Vec<(Option<u8>, u16, &str)> = d
            .keys
            .iter()
            .map(|k| (k.module, k.index, k.value.as_str()))
            .collect();
        assert_eq!(
            placed,
            [
                (None, 2, "3"),
                (None, 5, "1"),
                (None, 7, "2"),
                (Some(1), 1, "4")
            ]
        );
    }

    #[test]
    fn removing_a_module_moves_the_later_ones_up() {
        let mut d = device(
            vec![key(Some(1), 1, "1", ""), key(Some(2), 3, "2", "")],
            &["a", "b"],
        );
        remove_module(&mut d, 1);
        assert_eq!(d.modules, ["b"]);
        assert_eq!(
            (d.keys.len(), d.keys[0].module, d.keys[0].index),
            (1, Some(1), 3)
        );
    }
}
