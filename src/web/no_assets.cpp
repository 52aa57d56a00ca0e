// chatd built without the chat page (-DCHAT_BUILD_WEB=OFF): no files to serve.
#include "web/embedded_assets.hpp"

namespace chat::web {

std::span<const EmbeddedAsset> embedded_assets() { return {}; }

}  // namespace chat::web
