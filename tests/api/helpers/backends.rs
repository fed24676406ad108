//! Where each case runs: on both backends, or on SQLite alone.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// Every test case in `$name` runs once on each backend, as `postgres::$name` and
/// `sqlite::$name`. Each case is an `async fn(TestApp)`. Cases about storage (what is
/// kept, read back, changed, announced) belong here. A case may bring settings of its
/// own, `name: |s| s.vending.scheduler_interval = HOUR`, beside cases without:
///
/// ```ignore
/// on_both_backends!(
///     a_case_on_the_test_settings,
///     a_case_with_a_slow_scheduler: |s| s.vending.scheduler_interval = HOUR,
/// );
/// ```
///
/// The settings expression sees the items of the module that uses the macro.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident $(: $configure:expr)?),* $(,)?) => {
        mod postgres {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    let app = $crate::helpers::spawn_app_with(
                        $crate::helpers::Backend::Postgres,
                        $crate::test_settings!($($configure)?),
                    );
                    super::$name(app.await).await
                }
            )*
        }
        mod sqlite {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    let app = $crate::helpers::spawn_app_with(
                        $crate::helpers::Backend::Sqlite,
                        $crate::test_settings!($($configure)?),
                    );
                    super::$name(app.await).await
                }
            )*
        }
    };
}

/// The settings a case gives `on_both_backends!`, or none.
#[doc(hidden)]
#[macro_export]
macro_rules! test_settings {
    () => {
        |_: &mut tokenvend::config::Settings| {}
    };
    ($configure:expr) => {
        $configure
    };
}

/// Like `on_both_backends!` with settings for every case, written
/// `on_both_backends_with! { case_name: |s| s.vending.caller_fetch_rate = None; }` (kept
/// for the files that use it; `on_both_backends!` takes settings too).
#[macro_export]
macro_rules! on_both_backends_with {
    ($($name:ident: $configure:expr;)*) => {
        mod postgres {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::helpers::spawn_app_with($crate::helpers::Backend::Postgres, $configure).await).await
                }
            )*
        }
        mod sqlite {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::helpers::spawn_app_with($crate::helpers::Backend::Sqlite, $configure).await).await
                }
            )*
        }
    };
}

/// Every test case in `$name` runs on SQLite only, as `sqlite_only::$name`: cases about
/// HTTP behaviour alone (validation, caller keys and scopes, error shapes) that the
/// backend cannot change. Each case is an `async fn(TestApp)`.
#[macro_export]
macro_rules! on_sqlite_only {
    ($($name:ident),* $(,)?) => {
        mod sqlite_only {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::helpers::spawn_app($crate::helpers::Backend::Sqlite).await).await
                }
            )*
        }
    };
}
