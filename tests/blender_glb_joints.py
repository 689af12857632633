"""Run inside Blender (`blender -b --factory-startup --python THIS -- IN.glb OUT.json`): import a
GLB with Blender's own glTF importer and write every pose bone's head in world space per frame.

The scene runs at 20 fps before the import, so the importer (key time x scene fps) puts each
animation key on a whole frame.
"""
import json
import sys

import bpy
import numpy

# Debian bookworm pairs Blender 3.4, whose glTF importer still says `np.bool`, with numpy 1.24,
# which removed that alias; restore it so the importer can read meshes with normals.
if "bool" not in numpy.__dict__:
    numpy.bool = bool

glb, out = sys.argv[sys.argv.index("--") + 1:][:2]
bpy.ops.wm.read_factory_settings(use_empty=True)
scene = bpy.context.scene
scene.render.fps, scene.render.fps_base = 20, 1.0
bpy.ops.import_scene.gltf(filepath=glb)

armatures = [obj for obj in scene.objects if obj.type == "ARMATURE"]
assert len(armatures) == 1, [obj.name for obj in scene.objects]
armature = armatures[0]
action = armature.animation_data.action
first, last = (int(round(f)) for f in action.frame_range)
heads = []
for frame in range(first, last + 1):
    scene.frame_set(frame)
    heads.append({bone.name: list(armature.matrix_world @ bone.head) for bone in armature.pose.bones})
meshes = sum(obj.type == "MESH" for obj in scene.objects)
with open(out, "w") as handle:
    json.dump({"frames": len(heads), "first_frame": first, "meshes": meshes, "heads": heads}, handle)
