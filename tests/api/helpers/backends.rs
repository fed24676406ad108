//! Where each case runs: on both backends, or on SQLite alone.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// Every test case in `$name` runs once on each backend, as `postgres::$name` and
/// `sqlite::$name`. Each case is an `async fn(TestApp)`. Cases about storage (what is
/// kept, read back, changed, announced) belong here.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::helpers::spawn_app($crate::helpers::Backend::Postgres).await).await
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::helpers::spawn_app($crate::helpers::Backend::Sqlite).await).await
                }
            )*
        }
    };
}

/// Like `on_both_backends!`, each case with settings of its own:
/// `on_both_backends_with! { case_name: |s| s.vending.caller_fetch_rate = None; }`; the
/// settings expression sees the items of the module that uses the macro.
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
