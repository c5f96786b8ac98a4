//! The administered objects and their rules, independent of transport.

pub mod assignment;
pub mod assignment_policy;
pub mod catalog;
pub mod crud;
pub mod directory;
pub mod entity;
pub mod migrations;
pub mod package;
pub mod request;
pub mod request_events;
pub mod scope;
pub mod settings;
pub mod validate;

/// Implements the bookkeeping accessors of [`entity::Entity`] for a message
/// with `id`, `etag` and `info` fields.
macro_rules! tracked_fields {
    () => {
        fn set_id(&mut self, id: String) {
            self.id = id;
        }
        fn etag(&self) -> &str {
            &self.etag
        }
        fn set_etag(&mut self, etag: String) {
            self.etag = etag;
        }
        fn info(&self) -> Option<&crate::pb::RecordInfo> {
            self.info.as_ref()
        }
        fn set_info(&mut self, info: crate::pb::RecordInfo) {
            self.info = Some(info);
        }
    };
}

/// Declares the mutable fields of an [`entity::Entity`] and implements
/// `is_set` / `copy_field` for them.
macro_rules! mutable_fields {
    ($($field:ident),+ $(,)?) => {
        const MUTABLE: &'static [&'static str] = &[$(stringify!($field)),+];
        fn is_set(&self, field: &str) -> bool {
            match field {
                $(stringify!($field) => !$crate::domain::is_default(&self.$field),)+
                _ => false,
            }
        }
        fn copy_field(&mut self, from: &Self, field: &str) {
            match field {
                $(stringify!($field) => self.$field = from.$field.clone(),)+
                _ => {}
            }
        }
    };
}

pub(crate) use {mutable_fields, tracked_fields};

/// Whether a field holds its type's default (proto3's "not set").
pub fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}
