/* static_routing.c - [model] static_routing: FlexNet's MaxPrefResNet ablation (flexnet.md 2.2). A
 * trained flex model's routing (bioflex-eval --routing writes it: per channel-wise max layer, the
 * fraction of its elements where the conv won) fixes each flex site ahead of time to the branch it
 * preferred: a plain conv where the conv fraction exceeds the threshold (0.5: the conv won most
 * elements), else the parameter-free pool branch. The ablation asks whether the per-element choice
 * matters, or only which branch each site mostly took. model.c builds each site as this file says
 * (bf_model_add_flex); the routing file is read here once per model build. */
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "bioflex/model.h"
#include "fsutil.h"

typedef struct site_route {
    char name[BF_NAME_MAX];
    double conv_fraction;
    bf_flex_route route;
} site_route;

struct bf_static_routing {
    char path[BF_PATH_MAX];
    double threshold;
    site_route *sites;
    int count;
};

void bf_static_routing_free(bf_static_routing *r) {
    if (!r) return;
    free(r->sites);
    free(r);
}

/* One entry of the file's "layers": a channel-wise max layer with its conv fraction; mask-joint
 * layers (listed by name and joint alone) have no fixed branch to take. */
static bf_status read_site(const bf_static_routing *r, const cJSON *layer, int index, site_route *site) {
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(layer, "name");
    const cJSON *joint = cJSON_GetObjectItemCaseSensitive(layer, "joint");
    const cJSON *conv = cJSON_GetObjectItemCaseSensitive(layer, "conv");
    if (!cJSON_IsString(name) || strlen(name->valuestring) >= BF_NAME_MAX)
        return bf_error(BF_ERR_FORMAT, "[model] static_routing: %s: layers[%d] has no \"name\" string", r->path, index);
    if (cJSON_IsString(joint) && strcmp(joint->valuestring, "channelwise_max") != 0)
        return bf_error(BF_ERR_FORMAT, "[model] static_routing: %s: layer %s has joint %s; only channel-wise max flex "
                        "layers have a branch to fix (their conv fraction)", r->path, name->valuestring, joint->valuestring);
    if (!cJSON_IsNumber(conv) || conv->valuedouble < 0 || conv->valuedouble > 1)
        return bf_error(BF_ERR_FORMAT, "[model] static_routing: %s: layer %s has no \"conv\" fraction in [0, 1]", r->path,
                        name->valuestring);
    snprintf(site->name, sizeof site->name, "%s", name->valuestring);
    site->conv_fraction = conv->valuedouble;
    site->route = conv->valuedouble > r->threshold ? BF_FLEX_ROUTE_CONV : BF_FLEX_ROUTE_POOL;
    return BF_OK;
}

bf_status bf_static_routing_read(const char *path, double threshold, bf_static_routing **out) {
    *out = NULL;
    bf_static_routing *r = calloc(1, sizeof *r);
    if (!r) return bf_error(BF_ERR_OOM, "[model] static_routing: out of host memory");
    snprintf(r->path, sizeof r->path, "%s", path);
    r->threshold = threshold;
    char *text = NULL;
    bf_status s = bf_read_file_text(path, &text);
    if (s != BF_OK) {
        free(r);
        return bf_error_context(s, "[model] static_routing");
    }
    cJSON *root = cJSON_Parse(text);
    free(text);
    const cJSON *layers = cJSON_GetObjectItemCaseSensitive(root, "layers");
    const int count = cJSON_GetArraySize(layers);
    if (!cJSON_IsArray(layers) || count == 0)
        s = bf_error(BF_ERR_FORMAT, "[model] static_routing: %s is not a routing file: expected a JSON object with a "
                     "\"layers\" list, as bioflex-eval --routing writes", path);
    if (s == BF_OK && !(r->sites = calloc((size_t)count, sizeof *r->sites)))
        s = bf_error(BF_ERR_OOM, "[model] static_routing: out of host memory");
    int index = 0;
    for (const cJSON *layer = s == BF_OK ? layers->child : NULL; layer && s == BF_OK; layer = layer->next, index++) {
        s = read_site(r, layer, index, &r->sites[index]);
        for (int k = 0; k < index && s == BF_OK; k++)
            if (strcmp(r->sites[k].name, r->sites[index].name) == 0)
                s = bf_error(BF_ERR_FORMAT, "[model] static_routing: %s lists layer %s twice", path, r->sites[k].name);
    }
    cJSON_Delete(root);
    r->count = index;
    if (s != BF_OK) {
        bf_static_routing_free(r);
        return s;
    }
    *out = r;
    return BF_OK;
}

static const site_route *find_site(const bf_static_routing *r, const char *name) {
    for (int i = 0; i < r->count; i++)
        if (strcmp(r->sites[i].name, name) == 0) return &r->sites[i];
    return NULL;
}

bf_status bf_static_routing_route(const bf_static_routing *r, const char *name, bf_flex_route *route) {
    const site_route *site = find_site(r, name);
    if (!site)
        return bf_error(BF_ERR_CONFIG, "[model] static_routing: %s has no layer %s, a flex site of this model (a routing "
                        "file of another network? bioflex-eval --routing of the trained flex model writes the right one)",
                        r->path, name);
    *route = site->route;
    return BF_OK;
}

/* Whether the model built site `name`: as a flex layer (learned or pool), or as the conv layer that
 * bf_model_add_flex names "<name>.flex_conv". */
static int model_has_site(const bf_model *m, const char *name) {
    const size_t len = strlen(name);
    for (int i = 0; i < m->num_layers; i++) {
        const bf_layer *l = &m->layers[i];
        if (l->kind == BF_LAYER_FLEX && strcmp(l->name, name) == 0) return 1;
        if (l->kind == BF_LAYER_CONV && strncmp(l->name, name, len) == 0 && strcmp(l->name + len, ".flex_conv") == 0)
            return 1;
    }
    return 0;
}

bf_status bf_static_routing_check(const bf_static_routing *r, const bf_model *m, int *conv, int *pool) {
    int sites[3] = {0, 0, 0};
    for (int i = 0; i < r->count; i++) {
        if (!model_has_site(m, r->sites[i].name))
            return bf_error(BF_ERR_CONFIG, "[model] static_routing: %s names layer %s, which this %s model does not have "
                            "as a flex site (a routing file of another network?)", r->path, r->sites[i].name, m->arch);
        sites[r->sites[i].route]++;
    }
    if (conv) *conv = sites[BF_FLEX_ROUTE_CONV];
    if (pool) *pool = sites[BF_FLEX_ROUTE_POOL];
    return BF_OK;
}
